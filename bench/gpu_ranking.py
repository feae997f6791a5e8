"""Ranking on a GPU: our `DeviceRanker` against a PyTorch gather+bmm+top-k anchor, and the
host ranker (NumPy) on the same machine's CPU, in one run.

    python -m bench.gpu_ranking                        # 20,000 accounts x ~500 articles
    python -m bench.gpu_ranking --device cpu --accounts 200   # NumPy only (no GPU)

The workload of issue 13: `--accounts` accounts of 400-600 random unit vectors (mean
500: 10M vectors at 20,000), dim 384, float16 on the device; each query asks a random
account for its top 10. Per batch size (1, 32, 256), each ranker gets the same batches;
the figure is the median time of one call after warm-up, as queries/s.

- kbrec DeviceRanker: `rank_batch`, what the service runs: host plan, device work,
  results as ScoredArticle lists (article_id tie-break included);
- kbrec device part: the same up to the candidates copied back (no result objects);
- PyTorch anchor: one gather of each query's account rows, a bmm, a masked top-k, the
  ids and scores copied back (the measurement in the issue), on the same device array
  (shared through DLPack);
- kbrec IndexRanker on the CPU: the host ranker (a matrix per account, one product per
  account per batch), on `--cpu-accounts` accounts of the same sizes (its cost per query
  depends on the account's size only).

It imports only NumPy, CuPy, PyTorch and the ranking modules (server.inference: no
service dependencies), so it runs on a bare GPU machine (bench/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from server.inference.array_modules import NUMPY, ArrayModule, NoGpu, cupy_arrays
from server.inference.device_index import DeviceIndex
from server.inference.device_ranking import DeviceRanker, device_candidates
from server.inference.index import IndexEntry, VersionIndex
from server.inference.ranking import IndexRanker, RankRequest

DIM = 384
TOP_K = 10
MIN_ARTICLES, MAX_ARTICLES = 400, 600
GENERATE_ROWS = 1 << 20  # rows of random vectors made at once on the device


@dataclass(frozen=True)
class Row:
    ranker: str
    where: str
    batch: int
    median_ms: float
    anchor_ms: float | None = None

    @property
    def queries_per_s(self) -> float:
        return self.batch / self.median_ms * 1000


@dataclass(frozen=True)
class Workload:
    sizes: np.ndarray  # articles per account
    entries: list[list[IndexEntry]]

    @property
    def accounts(self) -> list[str]:
        return [f"acct{i:05d}" for i in range(len(self.sizes))]


def make_workload(accounts: int, seed: int) -> Workload:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(MIN_ARTICLES, MAX_ARTICLES + 1, size=accounts)
    # Article ids repeat across accounts (ids are per account): one entry object per id.
    shared = [IndexEntry(f"article-{i:04d}", f"Article {i}", None) for i in range(MAX_ARTICLES)]
    return Workload(sizes, [shared[:size] for size in sizes.tolist()])


def random_unit_rows(arrays: ArrayModule, rows: int, dim: int, dtype: str, seed: int) -> Any:
    """[rows, dim] unit vectors made on the array module's device, chunk by chunk."""
    xp = arrays.xp
    out = xp.empty((rows, dim), dtype=dtype)
    if arrays.name == "cupy":
        state = xp.random.RandomState(seed)

        def normal(count: int) -> Any:
            return state.standard_normal((count, dim), dtype=xp.float32)
    else:
        generator = np.random.default_rng(seed)

        def normal(count: int) -> Any:
            return generator.standard_normal((count, dim), dtype=np.float32)

    for start in range(0, rows, GENERATE_ROWS):
        end = min(rows, start + GENERATE_ROWS)
        chunk = normal(end - start)
        chunk /= xp.linalg.norm(chunk, axis=1, keepdims=True)
        out[start:end] = chunk
    return out


def request_batches(
    workload: Workload, batch: int, count: int, seed: int, accounts: int | None = None
) -> list[tuple[np.ndarray, list[RankRequest], np.ndarray]]:
    """(query vectors, requests, account numbers) per batch; the same for every ranker."""
    rng = np.random.default_rng(seed + batch)
    names = workload.accounts
    out = []
    for _ in range(count):
        numbers = rng.integers(0, accounts or len(names), size=batch)
        vectors = rng.standard_normal((batch, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        out.append((vectors, [RankRequest(names[n], TOP_K) for n in numbers], numbers))
    return out


def median_ms(call: Callable[[int], object], count: int, warmup: int = 3) -> float:
    for k in range(warmup):
        call(k % count)
    times = []
    for k in range(count):
        start = time.perf_counter()
        call(k)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def torch_anchor(vectors: Any, starts: np.ndarray, sizes: np.ndarray) -> Callable[..., Any]:
    """The issue's measurement: gather + bmm + masked top-k per batch, on `vectors`."""
    import torch

    table = torch.from_dlpack(vectors)
    device = table.device
    starts_t = torch.from_numpy(starts).to(device)
    sizes_t = torch.from_numpy(sizes.astype(np.int64)).to(device)
    longest = int(sizes.max())
    position = torch.arange(longest, device=device)

    def rank(numbers: np.ndarray, queries: np.ndarray) -> tuple[Any, Any]:
        accounts = torch.from_numpy(numbers).to(device)
        q = torch.from_numpy(queries).to(device).to(table.dtype)
        valid = position[None, :] < sizes_t[accounts][:, None]
        rows = torch.where(valid, starts_t[accounts][:, None] + position[None, :], 0)
        scores = torch.bmm(table[rows], q[:, :, None]).squeeze(-1).float()
        scores = scores.masked_fill(~valid, float("-inf"))
        values, columns = torch.topk(scores, TOP_K, dim=1)
        return values.cpu(), columns.cpu()

    return rank


def host_index(workload: Workload, accounts: int, seed: int) -> VersionIndex:
    index = VersionIndex(1, DIM)
    rng = np.random.default_rng(seed)
    for name, entries in zip(workload.accounts[:accounts], workload.entries, strict=False):
        vectors = rng.standard_normal((len(entries), DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for entry, vector in zip(entries, vectors, strict=True):
            index.upsert(name, entry, vector)
    return index


def agreement(
    index: DeviceIndex, anchor: Callable[..., Any], batch: tuple[np.ndarray, Any, np.ndarray]
) -> float:
    """Share of queries whose top 10 article sets are the same for us and the anchor."""
    vectors, requests, numbers = batch
    ours = DeviceRanker(index).rank_batch(vectors, requests)
    _, columns = anchor(numbers, vectors)
    same = [
        {r.article_id for r in result} == {f"article-{c:04d}" for c in row.tolist()}
        for result, row in zip(ours, columns.numpy(), strict=True)
    ]
    return sum(same) / len(same)


def run(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    notes: list[str] = []
    arrays = NUMPY
    if args.device == "cuda":
        arrays = cupy_arrays()
    workload = make_workload(args.accounts, args.seed)
    total = int(workload.sizes.sum())
    started = time.perf_counter()
    index = DeviceIndex(1, DIM, arrays, args.dtype, min_rows=total)
    vectors = random_unit_rows(arrays, total, DIM, args.dtype, args.seed)
    index.load_accounts(list(zip(workload.accounts, workload.entries, strict=True)), vectors)
    del vectors
    notes.append(
        f"{args.accounts} accounts, {total:,} vectors of dim {DIM} in {args.dtype} on "
        f"{arrays.name} (built in {time.perf_counter() - started:.1f} s), top {TOP_K}"
    )
    starts = np.concatenate([[0], np.cumsum(workload.sizes)[:-1]]).astype(np.int64)
    anchor = None
    if arrays.name == "cupy" and not args.no_torch:
        try:
            anchor = torch_anchor(index.vectors[:total], starts, workload.sizes)
        except ImportError as exc:
            notes.append(f"no PyTorch anchor: {exc}")
    ranker = DeviceRanker(index)
    cpu_index = host_index(workload, args.cpu_accounts, args.seed)
    cpu_ranker = IndexRanker(cpu_index)
    rows: list[Row] = []
    for batch in args.batches:
        batches = request_batches(workload, batch, args.repeats, args.seed)
        anchor_ms = None
        if anchor is not None:

            def call_anchor(k: int, batches: Sequence[Any] = batches) -> object:
                return anchor(batches[k][2], batches[k][0])

            anchor_ms = median_ms(call_anchor, args.repeats)
            rows.append(Row("PyTorch gather+bmm+top-k (anchor)", "cuda", batch, anchor_ms))
        ours = median_ms(lambda k, b=batches: ranker.rank_batch(b[k][0], b[k][1]), args.repeats)
        device_part = median_ms(
            lambda k, b=batches: device_candidates(index, b[k][0], b[k][1]), args.repeats
        )
        where = "cuda" if arrays.name == "cupy" else "cpu (NumPy)"
        rows.append(Row("kbrec DeviceRanker (ScoredArticle lists)", where, batch, ours, anchor_ms))
        rows.append(Row("kbrec DeviceRanker, device part", where, batch, device_part, anchor_ms))
        cpu_batches = request_batches(workload, batch, args.repeats, args.seed, args.cpu_accounts)
        cpu = median_ms(
            lambda k, b=cpu_batches: cpu_ranker.rank_batch(b[k][0], b[k][1]), args.repeats
        )
        rows.append(Row("kbrec IndexRanker (host, NumPy)", "cpu", batch, cpu, anchor_ms))
        if anchor is not None and batch == max(args.batches):
            share = agreement(index, anchor, batches[0])
            notes.append(f"same top-{TOP_K} sets as the anchor for {share:.1%} of a batch")
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    notes.append(
        f"IndexRanker on the first {args.cpu_accounts} accounts (same sizes): its cost per "
        "query depends on the account's size, not on the number of accounts; BLAS threads: "
        f"{threads or 'the default'}"
    )
    return rows, notes


def markdown(rows: Sequence[Row], notes: Sequence[str], device_name: str) -> str:
    lines = [
        f"GPU ranking benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {device_name}, "
        f"Python {platform.python_version()}",
        "",
        *[f"- {note}" for note in notes],
        "",
        "| ranker | where | batch | median ms per batch | queries/s | vs anchor |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ratio = "" if row.anchor_ms is None else f"{row.anchor_ms / row.median_ms:.2f}x"
        lines.append(
            f"| {row.ranker} | {row.where} | {row.batch} | {row.median_ms:.4f} | "
            f"{row.queries_per_s:,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def device_description(device: str) -> str:
    if device != "cuda":
        return f"CPU only ({platform.processor() or platform.machine()})"
    import cupy

    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = properties["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return f"{name}, CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--cpu-accounts", type=int, default=1000)
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument(
        "--batches", type=lambda text: [int(b) for b in text.split(",")], default=[1, 32, 256]
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch anchor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.cpu_accounts = min(args.cpu_accounts, args.accounts)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rows, notes = run(args)
    except NoGpu as exc:
        print(f"gpu_ranking: {exc} (use --device cpu)", file=sys.stderr)
        return 2
    print(markdown(rows, notes, device_description(args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
