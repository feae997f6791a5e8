"""conversion.parity: the cases it builds and the gate it enforces (no TensorFlow needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conversion.errors import ConversionError
from conversion.parity import (
    ParityCase,
    ParityReport,
    case_lengths,
    measure_parity,
    parity_inputs,
    require_parity,
)

CLS, SEP = 2, 3


def test_case_lengths() -> None:
    assert case_lengths(256) == [8, 64, 256]
    assert case_lengths(64) == [8, 64]
    assert case_lengths(5) == [5]


def test_inputs_cover_every_case(tokenizer_file: Path) -> None:
    cases = list(parity_inputs(tokenizer_file, 128))
    keys = [(kind, batch, length) for kind, batch, length, _ in cases]
    assert sorted(keys) == sorted(
        (kind, batch, length)
        for kind in ("random", "real")
        for batch in (1, 8, 64)
        for length in (8, 64, 128)
    )
    for _, batch, length, ids in cases:
        assert ids.dtype == np.int32
        assert ids.shape == (batch, length)


def test_random_ids_skip_special_tokens_and_have_padding_tails(tokenizer_file: Path) -> None:
    for kind, _, length, ids in parity_inputs(tokenizer_file, 64):
        if kind != "random":
            continue
        real = ids != 0
        assert ids[real].min() >= 1000 and ids[real].max() < 1500
        assert real[:, 0].all(), "no row is all padding"
        assert real[0].all(), "row 0 is full length"
        # Padding is a tail: once 0, always 0.
        assert (np.diff(real.astype(int), axis=1) <= 0).all()
        if length == 64 and ids.shape[0] == 64:
            assert (~real).any(), "a large batch has padded rows"


def test_real_batches_are_tokenized_text(tokenizer_file: Path) -> None:
    for kind, _, length, ids in parity_inputs(tokenizer_file, 64):
        if kind != "real":
            continue
        assert (ids[:, 0] == CLS).all()
        assert ((ids == SEP).sum(axis=1) == 1).all(), "truncation keeps one closing [SEP]"
        if length == 8:
            assert (ids[:, -1] == SEP).any(), "long texts are truncated to the case length"


def test_inputs_are_deterministic(tokenizer_file: Path) -> None:
    first = [ids for *_, ids in parity_inputs(tokenizer_file, 64)]
    again = [ids for *_, ids in parity_inputs(tokenizer_file, 64)]
    other = [ids for *_, ids in parity_inputs(tokenizer_file, 64, seed=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def embed(ids: np.ndarray) -> np.ndarray:
    return np.tile(ids.sum(axis=1, keepdims=True).astype(np.float32), (1, 4)) / 1e6


def sample_inputs() -> list[tuple[str, int, int, np.ndarray]]:
    ids = np.arange(12, dtype=np.int32).reshape(3, 4)
    return [("random", 3, 4, ids), ("real", 3, 4, ids + 1)]


def test_identical_outputs_pass() -> None:
    report = measure_parity(embed, embed, sample_inputs())
    assert report.passed
    assert report.max_abs_diff == 0.0
    require_parity(report)


def test_reports_the_worst_case_and_refuses() -> None:
    def perturbed(ids: np.ndarray) -> np.ndarray:
        bump = 2e-4 if ids.min() == 1 else 1e-5  # the "real" case is the bad one
        return embed(ids) + bump

    report = measure_parity(embed, perturbed, sample_inputs(), tolerance=1e-4)
    assert not report.passed
    assert report.worst.kind == "real"
    assert report.max_abs_diff == pytest.approx(2e-4, rel=1e-3)
    with pytest.raises(ConversionError, match=r"worst case: real batch 3 × length 4"):
        require_parity(report)


def test_non_finite_outputs_fail() -> None:
    def broken(ids: np.ndarray) -> np.ndarray:
        out = embed(ids)
        out[0, 0] = np.nan
        return out

    report = measure_parity(embed, broken, sample_inputs())
    assert math.isinf(report.max_abs_diff)
    assert not report.passed


def test_shape_mismatch_fails() -> None:
    with pytest.raises(ConversionError, match="shape"):
        measure_parity(embed, lambda ids: embed(ids)[:, :2], sample_inputs())


def test_report_serialises_for_metadata() -> None:
    report = ParityReport(
        tolerance=1e-4,
        cases=(ParityCase("random", 1, 8, 1e-7), ParityCase("real", 8, 64, 3e-7)),
    )
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data == {
        "max_abs_diff": 3e-7,
        "tolerance": 1e-4,
        "cases": [
            {"batch": 1, "length": 8, "kind": "random", "max_abs_diff": 1e-7},
            {"batch": 8, "length": 64, "kind": "real", "max_abs_diff": 3e-7},
        ],
    }
