"""Backfill pacing: steps bounded in padded tokens, pauses that cap the backend share."""

from __future__ import annotations

import pytest

from server.versions.backfill import BackfillPacing, token_steps


def test_steps_fit_the_token_budget_shortest_first() -> None:
    lengths = [30, 5, 200, 8, 60, 7]
    steps = list(token_steps(lengths, step_tokens=64))
    assert sorted(i for step in steps for i in step) == list(range(len(lengths)))
    for step in steps:
        longest = max(lengths[i] for i in step)
        assert longest * len(step) <= 64 or len(step) == 1
    assert steps[0] == [1, 5, 3]  # 5, 7, 8 tokens: padded to 8, three rows
    assert [2] in steps  # longer than the budget: alone


def test_the_pause_keeps_the_busy_share() -> None:
    assert BackfillPacing(share=1.0).pause_after(0.2) == 0
    assert BackfillPacing(share=0.25).pause_after(0.1) == pytest.approx(0.3)


@pytest.mark.parametrize("options", [{"share": 0}, {"share": 1.5}, {"step_tokens": 0}])
def test_bad_pacing_is_rejected(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackfillPacing(**options)  # type: ignore[arg-type]
