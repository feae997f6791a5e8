"""Text → token ids, shared by training, conversion checks and the server.

The encoder's only input is `input_ids` (int32, 0 = padding); the attention
mask is derived inside the model, so padding here must use id 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from kbrec.ascii_wordpiece import AsciiWordPiece

PAD_ID = 0


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class TextTokenizer:
    """A `tokenizer.json` with truncation to the model's max length, no padding."""

    def __init__(self, path: Path, max_length: int, data: bytes | None = None) -> None:
        """`data`: the file's bytes, already read (and checked) by the caller; else the
        file at `path` is read."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.path = path
        self.max_length = max_length
        config = path.read_text(encoding="utf-8") if data is None else data.decode("utf-8")
        self._tokenizer = Tokenizer.from_str(config)
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        pad = self._tokenizer.token_to_id("[PAD]")
        if pad is not None and pad != PAD_ID:
            raise ValueError(f"{path}: [PAD] has id {pad}; the encoder expects {PAD_ID}")
        self._ascii = AsciiWordPiece.for_tokenizer(self._tokenizer, config)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids per text, [CLS] … [SEP], truncated to max_length (default: the model's)."""
        rows = self._encode(texts)
        if max_length is None or max_length >= self.max_length:
            return rows
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        # Keep the closing [SEP], as the tokenizer's own truncation does.
        return [
            row if len(row) <= max_length else [*row[: max_length - 1], row[-1]] for row in rows
        ]

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Plain ASCII texts through the fast path, the rest through the library."""
        if self._ascii is None:
            rows: list[list[int] | None] = [None] * len(texts)
        else:
            rows = [self._ascii.encode(text, self.max_length) for text in texts]
        rest = [i for i, row in enumerate(rows) if row is None]
        if rest:
            for i, ids in zip(rest, self.library_encode([texts[i] for i in rest]), strict=True):
                rows[i] = ids
        return rows  # type: ignore[return-value]  # every None was filled

    def library_encode(self, texts: Sequence[str]) -> list[list[int]]:
        """The tokenizers library alone, without the fast path (the reference it equals)."""
        # encode_batch_fast: the same ids without character offsets, which nothing here reads
        return [encoding.ids for encoding in self._tokenizer.encode_batch_fast(list(texts))]

    def encode_padded(self, texts: Sequence[str], length: int | None = None) -> np.ndarray:
        """int32 [batch, length]: truncated to `length` and padded to it (default: longest)."""
        return pad_batch(self.encode(texts, length), length)


def pad_batch(ids: Sequence[Sequence[int]], length: int | None = None) -> np.ndarray:
    """Right-pad with PAD_ID to `length` (default: the longest row) as int32 [batch, length]."""
    width = length if length is not None else max((len(row) for row in ids), default=0)
    out = np.full((len(ids), max(width, 1)), PAD_ID, dtype=np.int32)
    for i, row in enumerate(ids):
        if len(row) > width:
            raise ValueError(f"row {i} has {len(row)} tokens, more than length {width}")
        out[i, : len(row)] = row
    return out
