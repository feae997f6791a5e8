"""What re-embedding articles in the background costs a query, two ways, in one run.

    .venv/bin/python -m bench.background_embedding > /tmp/background_embedding.md

A query (32 tokens, the serving session with default threads) is timed:
- alone;
- next to a background session of its own (`--background-threads`, default 1)
  that embeds 256-token articles without pause (how the embedded backend
  re-embeds for a new version);
and the article step itself is timed on the serving session's threads: taking
turns with queries instead, a query arriving during a step waits up to that long.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from server.inference.backends.onnx_runtime import load_session

INPUT, OUTPUT = "input_ids", "embedding"


def timings_ms(call: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return sorted(out)


def row(name: str, times: list[float]) -> str:
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return f"| {name} | {len(times)} | {statistics.median(times):.1f} | {p95:.1f} |"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("model_repository/encoder/1"))
    parser.add_argument("--background-threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    model = str(args.model / "model.onnx")
    serving = load_session(model, 0)
    background = load_session(model, args.background_threads)
    rng = np.random.default_rng(0)
    query = rng.integers(1000, 20000, (1, 32), dtype=np.int32)
    article = rng.integers(1000, 20000, (1, 256), dtype=np.int32)
    for session in (serving, background):  # warm up
        session.run([OUTPUT], {INPUT: query})
        session.run([OUTPUT], {INPUT: article})

    alone = timings_ms(lambda: serving.run([OUTPUT], {INPUT: query}), args.runs)
    step = timings_ms(lambda: serving.run([OUTPUT], {INPUT: article}), args.runs // 5)
    stop = threading.Event()
    steps = 0

    def re_embed() -> None:
        nonlocal steps
        while not stop.is_set():
            background.run([OUTPUT], {INPUT: article})
            steps += 1

    worker = threading.Thread(target=re_embed)
    worker.start()
    time.sleep(0.5)
    started, steps_before = time.perf_counter(), steps
    beside = timings_ms(lambda: serving.run([OUTPUT], {INPUT: query}), args.runs)
    rate = (steps - steps_before) / (time.perf_counter() - started)
    stop.set()
    worker.join()

    print(f"## Background re-embedding beside queries, {datetime.date.today()}\n")
    print("| what is timed | runs | median ms | p95 ms |\n|---|---:|---:|---:|")
    print(row("query, 32 tokens, alone", alone))
    print(row(f"query, beside a {args.background_threads}-thread re-embedding session", beside))
    print(row("one 256-token article on the serving session (a turn)", step))
    ratio = statistics.median(beside) / statistics.median(alone)
    print(f"\nquery median beside / alone: **{ratio:.2f}x**; background: {rate:.1f} articles/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
