"""`kbrec experiment report`: an A/B experiment's report from the article store."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DB = "data/kbrec.sqlite"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment", help="A/B experiments between model versions: list them, report one"
    )
    commands = parser.add_subparsers(dest="experiment_command", required=True, metavar="ACTION")
    listing = commands.add_parser("list", help="every experiment in the store, the newest first")
    add_db(listing)
    listing.set_defaults(func=run_list)
    report = commands.add_parser(
        "report",
        help="per arm: requests, click-through at 1/3/5, helpful and solve rates, MRR of the "
        "clicked article, 95%% intervals and the test of the difference",
        description="Read an experiment's logged requests and their feedback from the store "
        "and print its report as Markdown (the figures of GET /v1/experiments/{id}). With "
        "--out, also write DIR/report.md and DIR/report.png (the PNG needs matplotlib, which "
        "comes with the loadtest extra: pip install 'kbrec[loadtest]').",
    )
    report.add_argument("--id", dest="experiment_id", help="default: the newest experiment")
    add_db(report)
    report.add_argument("--out", type=Path, help="directory for report.md and report.png")
    report.set_defaults(func=run_report)


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help="article store: a SQLite file or a postgresql:// URL (default: %(default)s)",
    )


def run_list(args: argparse.Namespace) -> int:
    from cli.store_access import with_store

    records = with_store(args.db, lambda store: store.experiment_records())
    if not records:
        print("no experiment in the store")
        return 0
    print("| experiment | state | control | treatment | share | unit | created | winner |")
    print("|---|---|---:|---:|---:|---|---|---|")
    for r in records:
        winner = f"{r.winner}{' (activated)' if r.activated else ''}" if r.winner else ""
        print(
            f"| {r.experiment_id} | {r.state.value} | {r.control_version} "
            f"| {r.treatment_version} | {r.treatment_share:.0%} | {r.unit} | {r.created_at} "
            f"| {winner} |"
        )
    return 0


def run_report(args: argparse.Namespace) -> int:
    from cli.store_access import with_store
    from kbrec.errors import CommandError
    from server.experiments.report import ExperimentReport, build_report, report_markdown
    from server.storage.store import ArticleStore

    async def read(store: ArticleStore) -> ExperimentReport:
        records = await store.experiment_records()
        if not records:
            raise CommandError("no experiment in the store: start one with POST /v1/experiments")
        wanted = args.experiment_id or records[0].experiment_id
        record = next((r for r in records if r.experiment_id == wanted), None)
        if record is None:
            known = ", ".join(r.experiment_id for r in records[:5])
            raise CommandError(f"no experiment {wanted!r} in the store (newest: {known})")
        return build_report(record, await store.logged_outcomes(experiment_id=wanted))

    report = with_store(args.db, read)
    markdown = report_markdown(report)
    print(markdown, end="")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "report.md").write_text(markdown, encoding="utf-8")
        from server.experiments.report_plot import write_report_png

        try:
            write_report_png(report, args.out / "report.png")
        except ImportError as exc:  # matplotlib: the loadtest extra
            raise CommandError(
                f"wrote {args.out / 'report.md'}; the PNG needs matplotlib ({exc}): "
                "pip install 'kbrec[loadtest]'"
            ) from exc
        print(f"\nwrote {args.out / 'report.md'} and {args.out / 'report.png'}")
    return 0
