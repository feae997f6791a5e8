"""Which logged requests were answered right, as the feedback tells: the input of the
threshold suggestion (`threshold.suggest`).

A request is judged when an article of its response got an article event (clicked,
helpful, not_helpful). Its top article was right when it was clicked or found helpful
and not marked not helpful; wrong when only other articles were clicked or found
helpful, or when it was marked not helpful. A request nobody reacted to says nothing
and is left out (counting it as wrong would bias the precision down; as right, up).
"""

from __future__ import annotations

from collections.abc import Sequence

from server.experiments.threshold import Judged
from server.storage.experiment_tables import ARTICLE_EVENTS, FeedbackEvent, LoggedOutcome

POSITIVE = (FeedbackEvent.CLICKED, FeedbackEvent.HELPFUL)


def judged(outcome: LoggedOutcome) -> Judged | None:
    logged = outcome.recommendation
    if not logged.article_ids:
        return None
    events = [e for e in outcome.feedback if e.event in ARTICLE_EVENTS]
    if not events:
        return None
    top = logged.article_ids[0]
    on_top = {e.event for e in events if e.article_id == top}
    right = bool(on_top & set(POSITIVE)) and FeedbackEvent.NOT_HELPFUL not in on_top
    return Judged(logged.scores[0], right)


def judged_requests(outcomes: Sequence[LoggedOutcome]) -> list[Judged]:
    return [j for j in map(judged, outcomes) if j is not None]
