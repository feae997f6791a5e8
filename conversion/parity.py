"""TensorFlow vs ONNX Runtime on the same token batches: the gate before publishing.

Cases: batch sizes {1, 8, 64} × lengths {8, 64, max_length} × two kinds —
"random" ids (from 1000 up, past the special tokens) with random padding tails,
and "real" texts tokenized with the export's own tokenizer.json.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.errors import ConversionError
from conversion.sample_texts import SAMPLE_TEXTS
from kbrec.tokenization import PAD_ID, TextTokenizer

DEFAULT_TOLERANCE = 1e-4
BATCH_SIZES: tuple[int, ...] = (1, 8, 64)
LENGTHS: tuple[int, ...] = (8, 64)  # max_length is added per model
RANDOM_ID_LOW = 1000
DEFAULT_SEED = 0

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ParityCase:
    kind: str  # "random" | "real"
    batch: int
    length: int
    max_abs_diff: float

    def describe(self) -> str:
        return f"{self.kind} batch {self.batch} × length {self.length}"


@dataclass(frozen=True)
class ParityReport:
    tolerance: float
    cases: tuple[ParityCase, ...]

    @property
    def worst(self) -> ParityCase:
        return max(self.cases, key=lambda case: case.max_abs_diff)

    @property
    def max_abs_diff(self) -> float:
        return self.worst.max_abs_diff

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        """The metadata.json form; only ever written for a passing (hence finite) report."""
        return {
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "cases": [
                {
                    "batch": c.batch,
                    "length": c.length,
                    "kind": c.kind,
                    "max_abs_diff": c.max_abs_diff,
                }
                for c in self.cases
            ],
        }


def case_lengths(max_length: int) -> list[int]:
    return sorted({length for length in LENGTHS if length < max_length} | {max_length})


def parity_inputs(
    tokenizer_path: Path, max_length: int, seed: int = DEFAULT_SEED
) -> Iterator[tuple[str, int, int, np.ndarray]]:
    """(kind, batch, length, int32 ids [batch, length]) for every case, deterministically."""
    # One tokenizer per length: truncation to `length` keeps the closing [SEP], as serving does.
    tokenizers = {
        length: TextTokenizer(tokenizer_path, length) for length in case_lengths(max_length)
    }
    vocab = tokenizers[max_length].vocab_size
    low = RANDOM_ID_LOW if vocab > RANDOM_ID_LOW else 1  # tiny test vocabularies
    rng = np.random.default_rng(seed)
    for batch, length in itertools.product(BATCH_SIZES, tokenizers):
        yield "random", batch, length, random_ids(rng, batch, length, low, vocab)
        # The last texts are the longest, so even batch 1 fills max_length.
        texts = [SAMPLE_TEXTS[i % len(SAMPLE_TEXTS)] for i in range(-batch, 0)]
        yield "real", batch, length, tokenizers[length].encode_padded(texts, length)


def random_ids(
    rng: np.random.Generator, batch: int, length: int, low: int, high: int
) -> np.ndarray:
    """Ids in [low, high) with a random padding tail per row; row 0 is full, none is empty."""
    ids = rng.integers(low, high, size=(batch, length), dtype=np.int32)
    keep = rng.integers(1, length + 1, size=batch)
    keep[0] = length
    ids[np.arange(length)[None, :] >= keep[:, None]] = PAD_ID
    return ids


def measure_parity(
    reference: Embed,
    candidate: Embed,
    inputs: Iterable[tuple[str, int, int, np.ndarray]],
    tolerance: float = DEFAULT_TOLERANCE,
) -> ParityReport:
    cases = []
    for kind, batch, length, ids in inputs:
        expected, actual = reference(ids), candidate(ids)
        if expected.shape != actual.shape:
            raise ConversionError(
                f"parity: {kind} batch {batch} × length {length} gives shape "
                f"{actual.shape} from ONNX Runtime but {expected.shape} from TensorFlow"
            )
        cases.append(ParityCase(kind, batch, length, _max_abs_diff(expected, actual)))
    if not cases:
        raise ConversionError("parity: no cases to compare")
    return ParityReport(tolerance=tolerance, cases=tuple(cases))


def _max_abs_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    # NaN/inf anywhere must fail the gate, and NaN would compare as "not above tolerance".
    if not (np.all(np.isfinite(expected)) and np.all(np.isfinite(actual))):
        return math.inf
    if expected.size == 0:
        return 0.0
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))


def require_parity(report: ParityReport) -> None:
    if not report.passed:
        raise ConversionError(
            f"parity failed: max abs diff {report.max_abs_diff:.3g} > tolerance "
            f"{report.tolerance:g} (worst case: {report.worst.describe()}); nothing published"
        )
