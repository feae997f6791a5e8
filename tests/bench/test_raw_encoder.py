"""The raw encoder's limit is a throughput over the whole ticket mix."""

from __future__ import annotations

import pytest

from bench.raw_encoder import EncoderRow, encoder_row


class RecordingSession:
    """An ONNX Runtime stand-in that records the padded length of each batch it runs."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def get_inputs(self) -> list[object]:
        return [type("Input", (), {"name": "input_ids"})()]

    def run(self, outputs: object, feeds: dict[str, object]) -> list[object]:
        self.lengths.append(feeds["input_ids"].shape[1])  # type: ignore[attr-defined]
        return []


def test_queries_per_s_counts_the_long_tickets() -> None:
    # Most batches are quick, a few slow: the median alone would say 1,000 queries/s.
    row = EncoderRow("mixed", 1, 10, 20.0, 20.0, median_ms=1.0, p99_ms=9.0, mean_ms=2.5)
    assert row.queries_per_s == pytest.approx(400.0)


def test_batch_one_visits_every_ticket() -> None:
    session = RecordingSession()
    rows = [[2, *range(10, 10 + n), 3] for n in (1, 5, 40, 2)]
    row = encoder_row(session, rows, "mixed", 1, budget_s=0.0)  # type: ignore[arg-type]
    assert sorted(set(session.lengths)) == [3, 4, 7, 42]  # each length, warm-up included
    assert row.runs >= len(rows)
