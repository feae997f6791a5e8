"""QueueAdmission: the served rate, the expected wait and the refusals it gives."""

from __future__ import annotations

import itertools
import math

import pytest

from server.inference.admission import DEADLINE_FACTOR, QueueAdmission


def test_without_a_measurement_only_the_row_cap_refuses() -> None:
    admission = QueueAdmission(max_queue=4, max_queue_s=0.001)
    assert admission.rows_per_s is None and admission.expected_wait_s(100) is None
    assert admission.refusal(queued=3, in_flight=32) is None
    assert "full (4 waiting)" in (admission.refusal(queued=4, in_flight=0) or "")


def test_the_expected_wait_is_the_rows_ahead_over_the_served_rate() -> None:
    admission = QueueAdmission(max_queue=1000, max_queue_s=0.5)
    admission.observe(32, 0.1)  # 320 rows/s
    assert admission.rows_per_s == pytest.approx(320)
    assert admission.expected_wait_s(160) == pytest.approx(0.5)
    assert admission.refusal(queued=128, in_flight=32) is None  # 0.5 s: at the limit
    refusal = admission.refusal(queued=129, in_flight=32)  # rows in flight count too
    assert refusal is not None and "expected wait 503 ms" in refusal and "500 ms" in refusal


def test_the_rate_follows_recent_batches() -> None:
    admission = QueueAdmission(max_queue=1000, max_queue_s=0.5)
    admission.observe(32, 0.1)
    rates = []
    for _ in range(30):  # the machine got twice as slow
        admission.observe(32, 0.2)
        rates.append(admission.rows_per_s or 0.0)
    assert all(later < earlier for earlier, later in itertools.pairwise(rates))
    assert rates[0] < 320 and rates[-1] == pytest.approx(160, rel=0.01)


def test_full_batches_weigh_more_than_small_ones() -> None:
    """Sums of rows and seconds, not a mean of per-batch rates: under load the batches
    are full and cheaper per row, and they set the rate."""
    admission = QueueAdmission(max_queue=1000, max_queue_s=0.5)
    admission.observe(1, 0.01)  # 100 rows/s alone
    admission.observe(32, 0.1)  # 320 rows/s full
    rate = admission.rows_per_s or 0.0
    assert 250 < rate < 320


@pytest.mark.parametrize(
    ("rows", "seconds"), [(0, 0.1), (-1, 0.1), (4, 0.0), (4, -1.0), (4, math.inf), (4, math.nan)]
)
def test_meaningless_batches_are_ignored(rows: int, seconds: float) -> None:
    admission = QueueAdmission(max_queue=10, max_queue_s=0.5)
    admission.observe(10, 0.1)
    admission.observe(rows, seconds)
    assert admission.rows_per_s == pytest.approx(100)


def test_zero_turns_the_time_rules_off() -> None:
    admission = QueueAdmission(max_queue=10, max_queue_s=0)
    admission.observe(1, 100.0)
    assert admission.refusal(queued=9, in_flight=1) is None
    assert admission.deadline_s == math.inf


def test_the_deadline_leaves_room_for_the_estimate() -> None:
    assert QueueAdmission(max_queue=10, max_queue_s=0.5).deadline_s == 0.5 * DEADLINE_FACTOR
    assert DEADLINE_FACTOR > 1


@pytest.mark.parametrize(
    ("max_queue", "max_queue_s"), [(0, 0.5), (10, -0.1), (10, math.inf), (10, math.nan)]
)
def test_bad_settings_are_refused(max_queue: int, max_queue_s: float) -> None:
    with pytest.raises(ValueError):
        QueueAdmission(max_queue, max_queue_s)
