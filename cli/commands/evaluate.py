"""`kbrec evaluate`: recall@1/5 and MRR@10 of exported encoders beside BM25."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="rank held-out queries within their account: BM25 vs exported encoders",
    )
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--saved-model", type=Path, action="append", default=[], help="repeatable")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--article-length", type=int, default=128)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.pipeline import run_evaluation

    run_evaluation(args.corpus, args.saved_model, args.split, args.article_length)
    return 0
