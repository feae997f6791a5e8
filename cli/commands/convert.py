"""`kbrec convert`: TF SavedModel → parity-checked ONNX → a new version in a Triton repository."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from kbrec.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert an exported encoder to ONNX and publish it as a new model version",
        description="Convert the serving signature of a `kbrec train` export to ONNX "
        "(tf2onnx, opset 18 or 17), check it with onnx.checker and ONNX Runtime, compare it "
        "with TensorFlow on random and real token batches, and only then publish it as "
        "<repository>/<model>/<version>/ with a config.pbtxt for the chosen Triton backend.",
    )
    parser.add_argument(
        "--saved-model",
        type=Path,
        required=True,
        metavar="DIR",
        help="export directory: SavedModel, tokenizer.json, encoder_config.json",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        required=True,
        metavar="DIR",
        help="Triton model repository (created if missing)",
    )
    parser.add_argument("--model", help="model name (default: encoder)")
    parser.add_argument(
        "--backend",
        choices=["onnxruntime", "python"],
        default="onnxruntime",
        help="onnxruntime: GPU Triton image; python: CPU Triton (dev, CI)",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="version number (default: the next free one)",
    )
    parser.add_argument(
        "--tensorrt-fp16",
        action="store_true",
        help="enable the TensorRT FP16 execution accelerator (onnxruntime only)",
    )
    parser.add_argument(
        "--fp16",
        action="store_true",
        help="also publish model_fp16.onnx (FP16 inside, the same int32 input and float32 "
        "output), refused unless on the corpus every embedding has cosine >= 0.999 with "
        "FP32's and >= 99%% of test queries get the same top 5; GPU Triton's config.pbtxt "
        "then serves it",
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        default=Path("data/corpus"),
        metavar="DIR",
        help="corpus of the --fp16 check: articles.jsonl, queries.jsonl (default: data/corpus)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.tensorrt_fp16 and args.backend != "onnxruntime":
        raise CommandError("--tensorrt-fp16 needs --backend onnxruntime")
    if args.version is not None and args.version <= 0:
        raise CommandError(f"--version must be a positive integer, got {args.version}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.verbose:
        logging.getLogger("tf2onnx").setLevel(logging.WARNING)  # its INFO lines drown progress

    from conversion.convert import ConvertOptions, convert
    from conversion.errors import ConversionError
    from kbrec.repository import MODEL_NAME, RepositoryError

    options = ConvertOptions(
        saved_model=args.saved_model,
        repository=args.repository,
        model=args.model or MODEL_NAME,
        backend=args.backend,
        version=args.version,
        tensorrt_fp16=args.tensorrt_fp16,
        fp16=args.fp16,
        corpus=args.corpus,
    )
    try:
        convert(options, log=lambda line: print(f"convert: {line}", flush=True))
    except (ConversionError, RepositoryError) as exc:
        raise CommandError(str(exc)) from exc
    return 0
