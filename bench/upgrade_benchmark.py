"""Live-upgrade benchmark: latency while a new model version is re-embedded and switched
in, against steady state, at the same open-loop rate, in one run.

    .venv/bin/python -m bench.upgrade_benchmark --new-version /tmp/stage/encoder/1 \
        --rate 20 > /tmp/upgrade_benchmark.md

1. `kbrec serve` on a copy of the repository (its newest version: v1) and of the
   store (vectors of v1 already stored), so start-up embeds nothing;
2. steady state: `kbrec loadtest` open loop at --rate for --steady-s seconds;
3. upgrade: the same load again, and after --lead-s the new version is published
   (renamed into the repository, as `kbrec convert` does); the watch finds it, the
   server re-embeds every article in the background and switches; the load test is
   stopped (SIGINT: its partial report) --tail-s after the switch, so its window
   covers the whole backfill and the switch;
4. re-embedding throughput (articles / seconds from publish to switch) and the
   server's memory: RSS with one version loaded, RSS with two, and the peak (VmHWM).

Prints Markdown tables; the load tests' own reports land under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kbrec.repository import CONFIG_FILE, list_versions, model_dir, version_dir
from kbrec.repository import publish_version as publish
from loadtest.kbrec_process import KBREC, ServeProcess, fetch_json
from loadtest.report import JSON_FILE


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--db", type=Path, default=Path("data/kbrec.sqlite"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--new-version", type=Path, required=True, help="version dir to publish")
    parser.add_argument("--rate", type=float, default=20.0, help="requests/s, both phases")
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--lead-s", type=float, default=5.0)
    parser.add_argument("--tail-s", type=float, default=5.0)
    parser.add_argument("--max-upgrade-s", type=float, default=1800.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/upgrade_benchmark"))
    parser.add_argument("serve_args", nargs="*", help="extra `kbrec serve` flags (after --)")
    return parser.parse_args(argv)


def loadtest(
    url: str, rate: float, out: Path, corpus: Path, duration_s: float
) -> subprocess.Popen[bytes]:
    """`kbrec loadtest` in its own process: it runs while this one publishes and watches,
    and SIGINT ends it with a report of what it measured (the upgrade's length is unknown
    up front)."""
    command = [*KBREC, "loadtest", "--url", url, "--rate", str(rate)]
    command += ["--duration", str(duration_s), "--warmup-s", "2", "--window-s", "10"]
    command += ["--workload", f"corpus:{corpus}", "--out", str(out), "--seed", "7"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def step_of(out: Path) -> dict:
    summary = json.loads((out / JSON_FILE).read_text())
    (step,) = summary["steps"]
    return step


def copy_version(source: Path, out: Path) -> None:
    for path in source.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="kbrec-upgrade-bench-"))
    repository, db = work / "repository", work / "kbrec.sqlite"
    newest = max(list_versions(args.repository))
    model_dir(repository).mkdir(parents=True)
    shutil.copy2(model_dir(args.repository) / CONFIG_FILE, model_dir(repository) / CONFIG_FILE)
    shutil.copytree(version_dir(args.repository, newest), version_dir(repository, 1))
    shutil.copy2(args.db, db)
    serve_args = ["--repository", str(repository), "--db", str(db), "--repository-poll-s", "1"]
    with ServeProcess([*serve_args, *args.serve_args]) as server:
        server.wait_ready(600)
        models = f"{server.url}/v1/models"
        articles = sum(v["stored_vectors"] for v in fetch_json(models)["versions"])
        steady_out = args.out / "steady"
        code = loadtest(server.url, args.rate, steady_out, args.corpus, args.steady_s).wait()
        if code != 0:
            raise RuntimeError(f"steady load test exited {code}")
        one_version = server.memory_kib()

        upgrade_out = args.out / "upgrade"
        load = loadtest(server.url, args.rate, upgrade_out, args.corpus, args.max_upgrade_s)
        try:
            time.sleep(args.lead_s)
            published_at = time.monotonic()
            publish(repository, lambda out: copy_version(args.new_version, out))
            progress: list[dict] = []
            while True:
                snapshot = fetch_json(models)
                if snapshot["upgrade"] is not None:
                    progress.append(snapshot["upgrade"])
                if snapshot["active_version"] == 2:
                    break
                if time.monotonic() - published_at > args.max_upgrade_s:
                    raise RuntimeError(f"no switch within {args.max_upgrade_s} s")
                time.sleep(1)
            upgrade_s = time.monotonic() - published_at
            two_versions = server.memory_kib()
            time.sleep(args.tail_s)
        finally:
            load.send_signal(signal.SIGINT)  # ends the run with a report of what it measured
            load.wait(120)
    report(
        args,
        Outcome(articles, upgrade_s, progress, one_version, two_versions),
        step_of(steady_out),
        step_of(upgrade_out),
    )
    return 0


@dataclass(frozen=True)
class Outcome:
    articles: int
    upgrade_s: float
    progress: list[dict]
    one: dict[str, int]  # memory with one version loaded
    two: dict[str, int]  # ... with two


def report(args: argparse.Namespace, outcome: Outcome, steady: dict, upgrade: dict) -> None:
    articles, upgrade_s, progress = outcome.articles, outcome.upgrade_s, outcome.progress
    one, two = outcome.one, outcome.two
    print(f"## Live upgrade, {datetime.date.today()}, open loop at {args.rate:g} req/s\n")
    print("| phase | measured s | achieved req/s | p50 ms | p99 ms | max ms | errors | dropped |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, step in (("steady (v1)", steady), ("during upgrade v1 → v2", upgrade)):
        latency = step["latency_us"]
        print(
            f"| {name} | {step['measured_s']:.0f} | {step['achieved_rate']:.1f} | "
            f"{latency['p50_us'] / 1000:.1f} | {latency['p99_us'] / 1000:.1f} | "
            f"{latency['max_us'] / 1000:.0f} | {sum(step['errors'].values())} | "
            f"{sum(step['dropped'].values())} |"
        )
    ratio = upgrade["latency_us"]["p99_us"] / steady["latency_us"]["p99_us"]
    p50_ratio = upgrade["latency_us"]["p50_us"] / steady["latency_us"]["p50_us"]
    print(f"\np99 during upgrade / steady: **{ratio:.2f}x** (p50: {p50_ratio:.2f}x)\n")
    rates = [p["articles_per_s"] for p in progress if p["articles_per_s"]]
    print("| upgrade | value |\n|---|---:|")
    print(f"| articles re-embedded | {articles} |")
    print(f"| publish → switch, s | {upgrade_s:.1f} |")
    print(f"| re-embedding, articles/s (publish → switch) | {articles / upgrade_s:.1f} |")
    if rates:
        print(f"| re-embedding, articles/s (server's last figure) | {rates[-1]:.1f} |")
    print(f"| RSS, one version loaded, MiB | {one['VmRSS'] / 1024:.0f} |")
    print(f"| RSS, two versions loaded, MiB | {two['VmRSS'] / 1024:.0f} |")
    print(f"| peak RSS (VmHWM), MiB | {two['VmHWM'] / 1024:.0f} |")
    print(f"\nserve flags: {' '.join(args.serve_args) or '(defaults)'}")


if __name__ == "__main__":
    raise SystemExit(main())
