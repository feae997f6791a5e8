"""Serving signature → ONNX with tf2onnx, then proof that the file is sound.

tf2onnx converts with `continue_on_error`: an op it cannot map (e.g. Erfc) is
logged and left in the graph, and the call still returns. So every export is
followed by `onnx.checker` (full check) and an ONNX Runtime load plus a smoke
run, and tf2onnx's logged errors are kept to explain a failure.

tf2onnx 1.17's `reshape_optimizer` breaks the encoder: it drops the reshape
after a Dense on [batch, seq, hidden], so the head-split reshape then gets the
flattened [batch*seq, hidden] tensor; the file passes onnx.checker and fails in
ONNX Runtime at run time. It is switched off for our conversions; ONNX Runtime
eliminates redundant reshapes itself when it loads the model.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from conversion.errors import ConversionError, one_line
from conversion.signature import INPUT_NAME, OUTPUT_NAME

# tf2onnx supports opsets up to 18; 17 is the fallback.
OPSETS: tuple[int, ...] = (18, 17)
TF2ONNX_DISABLED_OPTIMIZERS: tuple[str, ...] = ("reshape_optimizer",)
ORT_INPUT_TYPE = "tensor(int32)"
ORT_OUTPUT_TYPE = "tensor(float)"


def export_onnx(
    function: Any,
    output: Path,
    dim: int,
    opsets: Sequence[int] = OPSETS,
    log: Callable[[str], None] = print,
) -> int:
    """Convert the serving ConcreteFunction to `output`; return the opset that passed all checks."""
    failures: list[str] = []
    reported: list[str] = []  # tf2onnx's logged errors, once each across opsets
    for opset in opsets:
        output.unlink(missing_ok=True)
        log(f"converting to ONNX (opset {opset})…")
        with _collect_errors("tf2onnx") as errors:
            try:
                _run_tf2onnx(function, output, opset)
            except Exception as exc:  # tf2onnx raises whatever its handlers raise
                failures.append(f"opset {opset}: tf2onnx failed: {one_line(exc)}")
                continue
        reported += [error for error in errors if error not in reported]
        try:
            check_onnx_file(output)
            log("checker ok")
            check_onnx_contract(output, dim)
            log("ORT ok")
        except ConversionError as exc:
            failures.append(f"opset {opset}: {exc}")
            continue
        return opset
    output.unlink(missing_ok=True)
    message = "ONNX export failed — " + " | ".join(failures)
    if reported:
        message += f" — tf2onnx reported: {'; '.join(reported)}"
    if "Erfc" in message:
        message += " — Erfc comes from Keras' exact gelu: use approximate=True or write it with erf"
    raise ConversionError(message)


def _run_tf2onnx(function: Any, output: Path, opset: int) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec([None, None], tf.int32, name=INPUT_NAME)

    # A dict output gives the ONNX output its name; the input name comes from the spec.
    @tf.function(input_signature=[spec])
    def serve(input_ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: function(**{INPUT_NAME: input_ids})[OUTPUT_NAME]}

    with _without_optimizers(TF2ONNX_DISABLED_OPTIMIZERS):
        tf2onnx.convert.from_function(
            serve, input_signature=[spec], opset=opset, output_path=str(output)
        )


@contextmanager
def _without_optimizers(names: Sequence[str]) -> Iterator[None]:
    """Remove tf2onnx graph optimizers from its (module-level) registry for one conversion."""
    import tf2onnx.optimizer

    registry: OrderedDict[str, Any] = getattr(tf2onnx.optimizer, "_optimizers", OrderedDict())
    saved = OrderedDict(registry)
    for name in names:
        registry.pop(name, None)
    try:
        yield
    finally:
        registry.clear()
        registry.update(saved)


def check_onnx_file(path: Path) -> None:
    """onnx.checker with full_check (shape inference included); a path also handles >2 GB."""
    import onnx

    if not path.is_file():
        raise ConversionError(f"tf2onnx wrote no file at {path}")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConversionError(f"onnx.checker rejected the model: {one_line(exc)}") from exc


def check_onnx_contract(path: Path, dim: int) -> None:
    """ONNX Runtime loads it; I/O is exactly input_ids int32 [-1,-1] → embedding float [-1,dim]."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's pybind errors share no useful base class
        raise ConversionError(f"ONNX Runtime cannot load the model: {one_line(exc)}") from exc
    inputs, outputs = session.get_inputs(), session.get_outputs()
    _expect_io("input", inputs, INPUT_NAME, ORT_INPUT_TYPE, [None, None])
    _expect_io("output", outputs, OUTPUT_NAME, ORT_OUTPUT_TYPE, [None, dim])
    probe = np.array([[1, 2, 3], [1, 3, 0]], dtype=np.int32)  # valid in any vocabulary
    try:
        (result,) = session.run([OUTPUT_NAME], {INPUT_NAME: probe})
    except Exception as exc:
        raise ConversionError(f"ONNX Runtime cannot run the model: {one_line(exc)}") from exc
    if result.shape != (2, dim) or not np.all(np.isfinite(result)):
        raise ConversionError(
            f"ONNX Runtime smoke run gave shape {result.shape} (expected (2, {dim})) "
            f"or non-finite values"
        )


def _expect_io(
    kind: str, args: Sequence[Any], name: str, type_: str, shape: Sequence[int | None]
) -> None:
    """`shape`: None means the axis must be dynamic, an int that it is that size or dynamic."""
    found = [(a.name, a.type, list(a.shape)) for a in args]
    if len(args) != 1 or args[0].name != name or args[0].type != type_:
        raise ConversionError(f"ONNX {kind}s must be exactly [{name} {type_}], got {found}")
    actual = list(args[0].shape)
    ok = len(actual) == len(shape) and all(
        not isinstance(got, int) if want is None else (got == want or not isinstance(got, int))
        for got, want in zip(actual, shape, strict=True)
    )
    if not ok:
        want_text = ["-1" if want is None else str(want) for want in shape]
        raise ConversionError(
            f"ONNX {kind} {name} has shape {actual}, expected [{', '.join(want_text)}]"
        )


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(" ".join(record.getMessage().split()))


@contextmanager
def _collect_errors(logger_name: str) -> Iterator[list[str]]:
    handler = _ListHandler()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def load_onnx_embedder(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """input_ids → embedding with ONNX Runtime on the CPU, as the parity check runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def embed(input_ids: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: input_ids})[0]

    return embed
