"""ONNX Runtime vs the TF SavedModel (as a tf.function): encoder latency by batch size.

    .venv/bin/python -m bench.encoder_runtime --saved-model artifacts/pretrained \
        --onnx model_repository/encoder/1/model.onnx

Both run the same int32 token batches (random ids, fixed length, no padding)
on all cores; each cell is the median of --repeats timed calls after warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import onnxruntime as ort
import tensorflow as tf


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saved-model", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)

    loaded = tf.saved_model.load(str(args.saved_model))  # owns the variables: keep it
    tf_fn = tf.function(
        lambda ids: loaded.signatures["serving_default"](input_ids=ids)["embedding"]
    )
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)

    print(f"encoder latency, {args.length} tokens, median of {args.repeats} (ms)\n")
    print("| batch | TF SavedModel (tf.function) | ONNX Runtime | TF / ORT | ORT queries/s |")
    print("|---:|---:|---:|---:|---:|")
    for batch in args.batches:
        ids = rng.integers(1000, 30000, size=(batch, args.length), dtype=np.int32)
        ids[:, 0], ids[:, -1] = 101, 102
        tensor = tf.constant(ids)
        tf_ms = median_ms(lambda t=tensor: tf_fn(t).numpy(), args.repeats)
        ort_ms = median_ms(lambda i=ids: session.run(["embedding"], {"input_ids": i}), args.repeats)
        print(
            f"| {batch} | {tf_ms:.1f} | {ort_ms:.1f} | {tf_ms / ort_ms:.2f}x "
            f"| {batch / ort_ms * 1000:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
