"""The raw encoder: ONNX Runtime alone on the ticket texts, the limit a service is judged by.

Part of the service benchmark (bench/service_benchmark.py), apart because it is not
load generation: the model is called in this process, batch by batch, with no
server. Batches are padded to their longest member, as the service pads them;
"mixed" takes tickets in arrival order (the limit of this machine), "length-sorted"
takes neighbours in length order (what a length-aware batcher could reach).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kbrec.tokenization import pad_batch


@dataclass(frozen=True)
class EncoderRow:
    order: str  # "mixed": tickets as they come; "length-sorted": similar lengths together
    batch: int
    runs: int
    mean_tokens: float  # real tokens per row
    mean_padded_length: float  # what the model computes on
    median_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def queries_per_s(self) -> float:
        """Rows per second over the whole ticket mix: from the mean time per batch, not the
        median, which leaves out what the long tickets cost (a service pays for them)."""
        return self.batch / self.mean_ms * 1000


def ticket_batches(rows: Sequence[Sequence[int]], batch: int, count: int) -> list[np.ndarray]:
    """`count` batches cycling through the tickets, each padded to its longest member."""
    return [
        pad_batch([rows[(k * batch + j) % len(rows)] for j in range(batch)]) for k in range(count)
    ]


def time_encoder(
    run: Callable[[np.ndarray], object], batches: Sequence[np.ndarray], budget_s: float
) -> list[float]:
    """ms per call over the batches in turn, until the budget is spent (at least 5 calls)."""
    for warm in batches[:2]:
        run(warm)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    k = 0
    while len(times) < 5 or (time.perf_counter() < deadline and k < len(batches)):
        ids = batches[k % len(batches)]
        start = time.perf_counter()
        run(ids)
        times.append((time.perf_counter() - start) * 1000)
        k += 1
    return times


def encoder_row(
    session: ort.InferenceSession,
    rows: Sequence[Sequence[int]],
    order: str,
    batch: int,
    budget_s: float,
) -> EncoderRow:
    input_name = session.get_inputs()[0].name

    def run(ids: np.ndarray) -> object:
        return session.run(None, {input_name: ids})

    # Batch 1 visits every ticket twice, so its latency covers the whole length mix.
    count = 2 * len(rows) if batch == 1 else max(len(rows) // batch * 4, 8)
    batches = ticket_batches(rows, batch, count)
    times = time_encoder(run, batches, budget_s)
    used = [batches[k % len(batches)] for k in range(len(times))]
    return EncoderRow(
        order=order,
        batch=batch,
        runs=len(times),
        mean_tokens=float(np.mean([np.count_nonzero(ids) / ids.shape[0] for ids in used])),
        mean_padded_length=float(np.mean([ids.shape[1] for ids in used])),
        median_ms=float(np.median(times)),
        p99_ms=float(np.percentile(times, 99)),
        mean_ms=float(np.mean(times)),
    )


def raw_encoder_rows(
    model_path: Path, rows: Sequence[Sequence[int]], batch_sizes: Sequence[int], budget_s: float
) -> list[EncoderRow]:
    """Rows per batch size, mixed then length-sorted. The session (default threads) is
    freed on return, so its intra-op thread pool does not linger next to the server."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    results = []
    for order, ordered in (("mixed", rows), ("length-sorted", sorted(rows, key=len))):
        # One row has no padding: batch 1 is the same in both orders.
        for batch in [b for b in batch_sizes if order == "mixed" or b > 1]:
            results.append(encoder_row(session, ordered, order, batch, budget_s))
            row = results[-1]
            print(f"  raw encoder {order} batch {batch}: {row.median_ms:.1f} ms", file=sys.stderr)
    return results


def encoder_table(rows: Sequence[EncoderRow]) -> str:
    lines = [
        "| batch order | batch | timed batches | tokens / row | padded to | median ms / batch "
        "| p99 ms | mean ms | queries/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.order} | {r.batch} | {r.runs} | {r.mean_tokens:.1f} "
            f"| {r.mean_padded_length:.1f} | {r.median_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.mean_ms:.1f} | {r.queries_per_s:.0f} |"
        )
    return "\n".join(lines)
