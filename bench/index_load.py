"""Loading a version's stored vectors into its index: an upsert per row (`fill_index`)
against one bulk call (`load_index` → `load_accounts`), on the host `VersionIndex` and on
the `DeviceIndex` with NumPy (float32 and float16).

    python -m bench.index_load                      # 100,000 rows of dim 384, 3 repeats
    python -m bench.index_load --rows 10000 --repeats 1

The rows are what a store returns: random unit vectors, `--accounts` accounts of random
sizes, interleaved (the store's order is unspecified). Each figure is the median of
`--repeats` loads into a fresh index, the two ways taking turns; the device index is
flushed at the end (what the first ranking would do), so pending uploads are counted.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from server.inference.device_index import DeviceIndex
from server.inference.index import ArticleIndex, VersionIndex
from server.storage.store import IndexRow
from server.versions.live_set import fill_index, load_index


def stored_rows(count: int, accounts: int, dim: int, seed: int = 0) -> list[IndexRow]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = rng.integers(accounts, size=count)
    return [
        IndexRow(f"acct{owner:05d}", f"article-{i:07d}", f"title {i}", "en-us", vectors[i])
        for i, owner in enumerate(owners.tolist())
    ]


def timed(
    make: Callable[[], ArticleIndex],
    load: Callable[[ArticleIndex, Sequence[IndexRow]], None],
    rows: Sequence[IndexRow],
) -> float:
    index = make()
    start = time.perf_counter()
    load(index, rows)
    if isinstance(index, DeviceIndex):
        index.flush()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = stored_rows(args.rows, args.accounts, args.dim)
    kinds: dict[str, Callable[[], ArticleIndex]] = {
        "VersionIndex (host)": lambda: VersionIndex(1, args.dim),
        "DeviceIndex float32 (NumPy)": lambda: DeviceIndex(1, args.dim, dtype="float32"),
        "DeviceIndex float16 (NumPy)": lambda: DeviceIndex(1, args.dim, dtype="float16"),
    }
    print(f"{args.rows:,} rows, dim {args.dim}, {args.accounts} accounts; median of {args.repeats}")
    print("| index | upsert per row s | bulk s | speed-up |")
    print("|---|---:|---:|---:|")
    for name, make in kinds.items():
        times: dict[str, list[float]] = {"each": [], "bulk": []}
        for _ in range(args.repeats):  # alternating: a shared machine's drift hits both
            times["each"].append(timed(make, fill_index, rows))
            times["bulk"].append(timed(make, load_index, rows))
        each, bulk = (statistics.median(times[key]) for key in ("each", "bulk"))
        print(f"| {name} | {each:.3f} | {bulk:.3f} | {each / bulk:.1f}x |")


if __name__ == "__main__":
    main()
