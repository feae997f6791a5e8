"""bench.gpu_ranking at a small size with NumPy only: the table it prints and the agreement
of the rankers it times (the GPU run itself is bench/gpu_check.sh's)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from bench import gpu_ranking
from server.inference.array_modules import NUMPY
from server.inference.device_index import DeviceIndex
from server.inference.device_ranking import DeviceRanker
from server.inference.ranking import IndexRanker


def test_prints_one_row_per_ranker_and_batch(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--device", "cpu", "--accounts", "12", "--repeats", "3", "--batches", "1,8"]
    assert gpu_ranking.main(argv) == 0
    out = capsys.readouterr().out
    assert "12 accounts" in out and "float16 on numpy" in out
    rows = re.findall(
        r"^\| (kbrec [^|]+) \| ([^|]+) \| (\d+) \| ([\d.]+) \| ([\d,]+) \|", out, re.M
    )
    assert [(name.strip(), int(batch)) for name, _, batch, _, _ in rows] == [
        (name, batch)
        for batch in (1, 8)
        for name in (
            "kbrec DeviceRanker (ScoredArticle lists)",
            "kbrec DeviceRanker, device part",
            "kbrec IndexRanker (host, NumPy)",
        )
    ]
    for _, _, batch, ms, per_s in rows:
        rate = int(per_s.replace(",", ""))
        assert float(ms) > 0 and rate == pytest.approx(int(batch) / float(ms) * 1000, rel=0.01)


def test_the_timed_rankers_agree_on_the_workload() -> None:
    workload = gpu_ranking.make_workload(6, seed=1)
    total = int(workload.sizes.sum())
    vectors = gpu_ranking.random_unit_rows(NUMPY, total, gpu_ranking.DIM, "float32", 1)
    index = DeviceIndex(1, gpu_ranking.DIM, NUMPY, "float32")
    index.load_accounts(list(zip(workload.accounts, workload.entries, strict=True)), vectors)
    host = gpu_ranking.host_index(workload, 6, seed=1)  # other random vectors: fill them in
    for name, entries in zip(workload.accounts, workload.entries, strict=True):
        for entry, vector in zip(entries, index.account_matrix(name), strict=True):
            host.upsert(name, entry, vector)
    ((queries, requests, _),) = gpu_ranking.request_batches(workload, 16, 1, seed=1)
    ours = DeviceRanker(index).rank_batch(queries, requests)
    theirs = IndexRanker(host).rank_batch(queries, requests)
    assert [[r.article_id for r in result] for result in ours] == [
        [r.article_id for r in result] for result in theirs
    ]
    assert np.allclose(
        [r.score for result in ours for r in result],
        [r.score for result in theirs for r in result],
        atol=1e-6,
    )
    assert np.allclose(np.linalg.norm(index.account_matrix("acct00000"), axis=1), 1, atol=1e-5)
