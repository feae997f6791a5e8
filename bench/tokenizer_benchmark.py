"""Tokenizing the benchmark tickets: the tokenizers library against kbrec's ASCII fast path.

    TOKENIZERS_PARALLELISM=false taskset -c 0 .venv/bin/python -m bench.tokenizer_benchmark \
        --tokenizer model_repository/encoder/1/tokenizer.json

The tickets of loadtest/tickets.py (the front-end and service benchmarks' texts) in
batches of --batch, each way in turn for --rounds rounds; CPU µs per ticket (process
time, so other work on a shared machine counts less). Both ways must give the same ids
(checked first). A Markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kbrec.tokenization import TextTokenizer
from loadtest.tickets import HAND_WRITTEN

Encode = Callable[[list[str]], object]


def cpu_us_per_text(encode: Encode, batches: Sequence[list[str]], repeats: int) -> float:
    started = time.process_time()
    for _ in range(repeats):
        for batch in batches:
            encode(batch)
    texts = repeats * sum(len(batch) for batch in batches)
    return (time.process_time() - started) / texts * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="a tokenizer.json")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50, help="passes over the tickets a round")
    args = parser.parse_args(argv)

    tokenizer = TextTokenizer(args.tokenizer, args.max_length)
    library = tokenizer.library_encode
    texts = [text for _, text in HAND_WRITTEN]
    batches = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]
    if [tokenizer.encode(batch) for batch in batches] != [library(batch) for batch in batches]:
        print("the fast path and the library disagree", file=sys.stderr)
        return 1
    ways: dict[str, Encode] = {"tokenizers library": library, "kbrec": tokenizer.encode}
    runs: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, encode in ways.items():
            runs[name].append(cpu_us_per_text(encode, batches, args.repeats))
    words = statistics.mean(len(text.split()) for text in texts)
    print(f"{len(texts)} tickets ({words:.1f} words on average), batches of {args.batch}\n")
    print("| tokenizer | median CPU µs per ticket | each round |")
    print("|---|---:|---|")
    for name, values in runs.items():
        each = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {each} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
