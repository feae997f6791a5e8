"""The Triton target: the version's own token rows, gRPC errors by kind, and (marker
`triton`) a real run against the local Triton serving the tiny encoder."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from loadtest_helpers import QUERIES, config, small_workload
from triton_fixture_helpers import require_triton_env, triton_launch
from tritonclient.utils import InferenceServerException

from kbrec.repository import METADATA_FILE, TOKENIZER_FILE, VersionMetadata
from kbrec.tokenization import TextTokenizer
from loadtest.runner import Load, execute
from loadtest.target import CONNECTION_ERROR, PROTOCOL_ERROR, TIMEOUT, TargetError
from loadtest.triton_target import TritonTarget, error_kind, parse_grpc_url, triton_model
from loadtest.workload import pick_items

WORDS = sorted({w.lower() for q in QUERIES for w in q.text.replace("?", " ").split()})


def write_version(directory: Path, max_length: int = 8) -> None:
    """tokenizer.json (word level, [PAD] = 0) and metadata.json: all the target reads."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    directory.mkdir(parents=True)
    tokenizer.save(str(directory / TOKENIZER_FILE))
    metadata = VersionMetadata(8, max_length, "0" * 64, "0" * 64, {}, {}, "2026-11-27T00:00:00Z")
    (directory / METADATA_FILE).write_text(metadata.to_json())


def test_each_query_becomes_its_versions_token_row(tmp_path: Path) -> None:
    write_version(tmp_path / "encoder" / "2")
    write_version(tmp_path / "encoder" / "3", max_length=5)
    workload = small_workload()
    model = triton_model(workload, tmp_path, version=None)  # the newest
    assert (model.name, model.version, model.input_name) == ("encoder", 3, "input_ids")
    tokenizer = TextTokenizer(tmp_path / "encoder" / "3" / TOKENIZER_FILE, 5)
    texts = [q.text for q in workload.items[: workload.write_start]]
    for row, ids in zip(model.rows, tokenizer.encode(texts), strict=True):
        assert row.dtype == np.int32 and row.shape == (1, len(ids)) and row[0].tolist() == ids
    assert max(row.shape[1] for row in model.rows) == 5  # truncated to the version's length
    assert triton_model(workload, tmp_path, version=2).version == 2


def test_a_missing_version_is_a_target_error(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="no version"):
        triton_model(small_workload(), tmp_path, version=None)
    with pytest.raises(TargetError, match="version 7"):
        write_version(tmp_path / "encoder" / "1")
        triton_model(small_workload(), tmp_path, version=7)


@pytest.mark.parametrize(
    ("url", "target"),
    [("grpc://127.0.0.1:8001", "127.0.0.1:8001"), ("localhost:9", "localhost:9")],
)
def test_grpc_urls(url: str, target: str) -> None:
    assert parse_grpc_url(url) == target


@pytest.mark.parametrize("url", ["http://127.0.0.1:8001", "127.0.0.1", "grpc://h:p", "h:1/x"])
def test_bad_grpc_urls(url: str) -> None:
    with pytest.raises(TargetError):
        parse_grpc_url(url)


def test_grpc_failures_are_counted_by_kind() -> None:
    def failure(status: str | None) -> InferenceServerException:
        return InferenceServerException("failed", status=status)

    assert error_kind(failure("StatusCode.DEADLINE_EXCEEDED")) == TIMEOUT
    assert error_kind(failure("StatusCode.UNAVAILABLE")) == "grpc UNAVAILABLE"
    assert error_kind(failure(None)) == PROTOCOL_ERROR
    assert error_kind(ConnectionResetError()) == CONNECTION_ERROR
    assert error_kind(ValueError()) == PROTOCOL_ERROR


# --- against the real local Triton -------------------------------------------------------


@pytest.fixture(scope="module")
def triton_url(tiny_model_repository: Path) -> Iterator[str]:
    from local_triton.launcher import TritonServer

    require_triton_env()
    launch = triton_launch(tiny_model_repository)
    with TritonServer(launch) as server:
        yield server.grpc_url


@pytest.mark.triton
def test_a_closed_loop_against_triton(triton_url: str, tiny_model_repository: Path) -> None:
    workload = small_workload()
    model = triton_model(workload, tiny_model_repository, version=None)

    async def make() -> TritonTarget:
        return TritonTarget(triton_url, model, max_in_flight=4, timeout_s=10.0)

    picks = pick_items(workload, 0, 1.1, 0.0)
    load = Load(make, picks, workload.ops, triton_url, workload.description)
    run = config(mode="closed", loads=(2,), duration_s=2.0)
    result = asyncio.run(execute(run, load, progress_stream=io.StringIO()))
    totals = result.totals
    assert totals is not None and totals.errors.total() == 0
    assert totals.ok > 10
    assert result.steps[0].measured.latency().p50_us > 0


@pytest.mark.triton
def test_a_version_triton_does_not_serve_fails_the_check(
    triton_url: str, tiny_model_repository: Path
) -> None:
    workload = small_workload()
    model = triton_model(workload, tiny_model_repository, version=None)
    missing = dataclasses.replace(model, version=99)

    async def check() -> None:
        target = TritonTarget(triton_url, missing, max_in_flight=1, timeout_s=5.0)
        try:
            await target.check()
        finally:
            await target.close()

    with pytest.raises(TargetError, match="99"):
        asyncio.run(check())
