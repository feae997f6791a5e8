"""`kbrec threshold suggest`: the minimum score that reaches a target precision, from the
feedback on an account's logged recommendations."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.experiments.threshold import CurvePoint

CURVE_ROWS = 15  # points of the printed curve, spread over the coverage


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "threshold", help="the precision knob: suggest an account's minimum score"
    )
    commands = parser.add_subparsers(dest="threshold_command", required=True, metavar="ACTION")
    suggest = commands.add_parser(
        "suggest",
        help="print the precision/coverage curve of an account and the minimum score that "
        "reaches --precision",
        description="Read the account's logged recommendations and the feedback on them. A "
        "request is judged when an article of its answer got clicked, helpful or "
        "not_helpful: right when its top article was clicked or found helpful (and not marked "
        "not helpful). A minimum score t answers the requests whose top score is >= t: "
        "coverage is their share, precision the share of them that were right. The "
        "suggestion is the lowest t whose precision reaches the target (the most tickets "
        "answered at that precision). Scores belong to one model version: the curve is of "
        "--model-version (default: the version of the account's latest logged request).",
    )
    suggest.add_argument("--account", required=True)
    suggest.add_argument("--precision", type=float, default=0.9, help="target (default: 0.9)")
    suggest.add_argument("--model-version", type=int)
    suggest.add_argument(
        "--db",
        default="data/kbrec.sqlite",
        help="article store: a SQLite file or a postgresql:// URL (default: %(default)s)",
    )
    suggest.set_defaults(func=run_suggest)


def run_suggest(args: argparse.Namespace) -> int:
    from cli.store_access import with_store
    from kbrec.errors import CommandError
    from server.experiments.judging import judged_requests
    from server.experiments.threshold import between_scores, precision_coverage, suggest
    from server.storage.experiment_tables import LoggedOutcome
    from server.storage.store import ArticleStore

    if not 0 < args.precision <= 1:
        raise CommandError(f"--precision must be in (0, 1], got {args.precision}")

    async def read(store: ArticleStore) -> list[LoggedOutcome]:
        return await store.logged_outcomes(account_id=args.account)

    outcomes = with_store(args.db, read)
    if not outcomes:
        raise CommandError(f"no logged recommendation of account {args.account!r}")
    version = args.model_version or outcomes[-1].recommendation.model_version
    of_version = [o for o in outcomes if o.recommendation.model_version == version]
    judged = judged_requests(of_version)
    if not judged:
        raise CommandError(
            f"no feedback on account {args.account!r}'s recommendations of model version "
            f"{version} ({len(of_version)} logged): POST /v1/feedback first"
        )
    curve = precision_coverage(judged)
    point = suggest(judged, args.precision)
    print(
        f"Account {args.account}, model version {version}: {len(judged)} judged of "
        f"{len(of_version)} logged requests, {sum(j.right for j in judged)} right at the top.\n"
    )
    print(curve_table(curve, point))
    if point is None:
        best = max(curve, key=lambda p: p.precision)
        raise CommandError(
            f"no minimum score reaches precision {args.precision:g} "
            f"(the best is {best.precision:.3f} at {best.threshold:.4f}, answering "
            f"{best.answered} requests)"
        )
    min_score = round(between_scores(curve, point), 6)
    print(
        f"\nSuggested min_score {min_score}: precision {point.precision:.3f}, coverage "
        f"{point.coverage:.1%} ({point.answered} of {len(judged)} judged requests). Apply it: "
        f'PUT /v1/accounts/{args.account}/settings {{"min_score": {min_score}}}'
    )
    return 0


def curve_table(curve: Sequence[CurvePoint], point: CurvePoint | None) -> str:
    """Up to CURVE_ROWS points spread over the coverage, and the suggested one (marked)."""
    step = max(len(curve) // CURVE_ROWS, 1)
    shown = list(dict.fromkeys([*curve[::step], curve[-1], *([point] if point else [])]))
    shown.sort(key=lambda p: -p.threshold)
    lines = ["| min_score | precision | coverage | answered |", "|---:|---:|---:|---:|"]
    for p in shown:
        mark = " ←" if p == point else ""
        lines.append(
            f"| {p.threshold:.4f}{mark} | {p.precision:.3f} | {p.coverage:.1%} | {p.answered} |"
        )
    return "\n".join(lines)
