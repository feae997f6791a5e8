"""The one error type of the conversion package."""


class ConversionError(Exception):
    """A conversion that must not be published; the message says why, in one line."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception's text on one line (ONNX checker and TF errors span many), capped."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
