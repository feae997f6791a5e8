"""`kbrec train`: fine-tune the encoder on a corpus and export a SavedModel."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune the encoder and export a TF SavedModel",
        description="Fine-tune with an in-batch softmax loss on (index entry → article) and "
        "(title → body) pairs, evaluate against BM25 and the un-fine-tuned encoder, and "
        "export a SavedModel with tokenizer.json and metrics.json. --max-steps 0 exports the "
        "pretrained encoder as it is.",
    )
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/encoder"))
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=6e-5)
    parser.add_argument("--warmup-steps", type=int, default=15)
    parser.add_argument("--freeze-layers", type=int, default=2, help="frozen lower layers")
    parser.add_argument("--query-length", type=int, default=32)
    parser.add_argument("--article-length", type=int, default=128)
    parser.add_argument("--skip-eval", action="store_true", help="no evaluation (faster)")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    init = parser.add_argument_group("initialisation")
    init.add_argument("--init", choices=["minilm", "random"], default="minilm")
    init.add_argument("--hidden-size", type=int, default=64, help="--init random only")
    init.add_argument("--layers", type=int, default=2, help="--init random only")
    init.add_argument("--heads", type=int, default=2, help="--init random only")
    init.add_argument("--intermediate-size", type=int, default=128, help="--init random only")
    init.add_argument("--max-length", type=int, default=128, help="--init random only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kbrec.errors import CommandError
    from training.encoder import EncoderConfig
    from training.pipeline import TrainOptions, run_training
    from training.train import TrainConfig

    if args.max_steps < 0:
        raise CommandError("--max-steps must be >= 0")
    try:
        train_config = TrainConfig(
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=min(args.warmup_steps, args.max_steps),
            query_length=args.query_length,
            article_length=args.article_length,
            freeze_layers=args.freeze_layers,
            seed=args.seed,
        )
        random_config = EncoderConfig(
            hidden_size=args.hidden_size,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.intermediate_size,
            max_length=args.max_length,
            dropout=0.0,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    run_training(
        TrainOptions(
            corpus=args.corpus,
            out=args.out,
            train=train_config,
            init=args.init,
            random_config=random_config,
            evaluate=not args.skip_eval,
            split=args.split,
        )
    )
    return 0
