"""Triton directly, over KServe v2 gRPC: the same token rows kbrec would send, one per request.

Loading Triton next to kbrec's HTTP API (with the same workload) shows what the front
end costs: tokenisation, batching, ranking, HTTP. Each query is tokenised up front
with the model version's own tokenizer.json (kbrec.tokenization.TextTokenizer,
truncated to the version's max length) and sent as INT32 [1, seq] `input_ids`,
naming the version like kbrec's Triton backend does.

gRPC calls are coroutines, so each request costs a task here; this target is for the
hundreds of requests per second an encoder serves, not for the generator's limit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from kbrec.repository import (
    MODEL_NAME,
    TOKENIZER_FILE,
    RepositoryError,
    list_versions,
    read_metadata,
    version_dir,
)
from kbrec.tokenization import TextTokenizer
from loadtest.kbrec_process import fetch_text
from loadtest.target import (
    CONNECTION_ERROR,
    INTERRUPTED,
    PROTOCOL_ERROR,
    TIMEOUT,
    Done,
    TargetError,
)
from loadtest.workload import Query, Workload


@dataclass(frozen=True)
class TritonModel:
    """What requests are built for: model name and version, tensor names, token rows."""

    name: str
    version: int
    input_name: str
    output_name: str
    rows: tuple[np.ndarray, ...]  # per workload item: int32 [1, seq]


def parse_grpc_url(url: str) -> str:
    """'grpc://host:port' or 'host:port' → 'host:port' (what gRPC dials, and nothing else)."""
    target = url.removeprefix("grpc://").rstrip("/")
    host, _, port = target.rpartition(":")
    if "://" in target or "/" in target or not host or not port.isdigit():
        raise TargetError(f"{url!r}: expected grpc://HOST:PORT for --target triton")
    return target


def triton_model(
    workload: Workload, repository: Path, version: int | None, model: str = MODEL_NAME
) -> TritonModel:
    """Tokenise every query of the workload with the version's tokenizer."""
    if any(not isinstance(item, Query) for item in workload.items[: workload.write_start]):
        raise TargetError("the Triton target sends queries only")
    versions = list_versions(repository, model)
    if version is None:
        if not versions:
            raise TargetError(f"no version of {model!r} in {repository}")
        version = versions[-1]
    path = version_dir(repository, version, model)
    try:
        metadata = read_metadata(path)
        tokenizer = TextTokenizer(path / TOKENIZER_FILE, metadata.max_length)
    # tokenizers raises plain Exception for a broken tokenizer.json.
    except (RepositoryError, Exception) as exc:
        raise TargetError(f"version {version} of {model!r} in {repository}: {exc}") from exc
    texts = [item.text for item in workload.items[: workload.write_start]]
    rows = tuple(np.asarray([row], dtype=np.int32) for row in tokenizer.encode(texts))
    return TritonModel(model, version, metadata.input_name, metadata.output_name, rows)


def error_kind(exc: BaseException) -> str:
    """A Triton/gRPC failure as an error kind: 'timeout', 'grpc UNAVAILABLE', ..."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        status = (exc.status() or "").removeprefix("StatusCode.")
        if status == "DEADLINE_EXCEEDED":
            return TIMEOUT
        return f"grpc {status}" if status else PROTOCOL_ERROR
    if isinstance(exc, OSError):
        return CONNECTION_ERROR
    return PROTOCOL_ERROR


class TritonTarget:
    def __init__(self, url: str, model: TritonModel, max_in_flight: int, timeout_s: float) -> None:
        import tritonclient.grpc.aio as grpc_aio
        from tritonclient.grpc import InferInput, InferRequestedOutput

        self.url = url
        self.model = model
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.in_flight = 0
        self._loop = asyncio.get_running_loop()
        self._client = grpc_aio.InferenceServerClient(parse_grpc_url(url))
        self._version = str(model.version)
        self._outputs = [InferRequestedOutput(model.output_name)]
        # Inputs are built once per item: infer() only reads them, and building the
        # protobuf bytes per request would be generator cost, not Triton's.
        self._inputs = [self._input(InferInput, row) for row in model.rows]
        self._tasks: set[asyncio.Task[Any]] = set()

    def _input(self, infer_input: type, row: np.ndarray) -> Any:
        tensor = infer_input(self.model.input_name, list(row.shape), "INT32")
        tensor.set_data_from_numpy(row)
        return tensor

    def submit(self, item: int, done: Done) -> bool:
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        task = self._loop.create_task(self._infer(item))
        self._tasks.add(task)
        task.add_done_callback(partial(self._finished, item, done))
        return True

    def _infer(self, item: int) -> Any:
        return self._client.infer(
            self.model.name,
            [self._inputs[item]],
            model_version=self._version,
            outputs=self._outputs,
            client_timeout=self.timeout_s,
        )

    def _finished(self, item: int, done: Done, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1
        if task.cancelled():
            error: str | None = INTERRUPTED
        elif (exc := task.exception()) is not None:
            error = error_kind(exc)
        else:
            error = None
        done(item, self._loop.time(), error, 0.0)

    def abandon(self) -> int:
        count = len(self._tasks)
        for task in list(self._tasks):
            task.cancel()
        return count

    async def check(self) -> None:
        """Server and model version ready, and one real inference."""
        name, version = self.model.name, self._version
        try:
            ready = await self._client.is_model_ready(name, version, client_timeout=self.timeout_s)
            if not ready:
                raise TargetError(f"Triton at {self.url}: {name!r} version {version} is not ready")
            await self._infer(0)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(f"Triton at {self.url}: {error_kind(exc)}: {exc}") from exc

    async def close(self) -> None:
        self.abandon()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()


def execution_counters(metrics_url: str, model: str = MODEL_NAME) -> dict[str, float]:
    """Rows inferred and model executions of `model` so far, from Triton's Prometheus
    metrics: differences over a load level give the rows per execution, i.e. how much
    Triton's dynamic batcher batched. Blocking: read between levels."""
    names = {"nv_inference_count": "triton_rows", "nv_inference_exec_count": "triton_executions"}
    counts = dict.fromkeys(names.values(), 0.0)
    for line in fetch_text(metrics_url).splitlines():
        name, _, labels = line.partition("{")
        if name in names and f'model="{model}"' in labels:
            counts[names[name]] += float(line.rsplit(" ", 1)[1])
    return counts


def rows_per_execution(spent: dict[str, float]) -> float | None:
    """From differences of `execution_counters`; None without Triton's counters or runs."""
    executions = spent.get("triton_executions")
    return spent["triton_rows"] / executions if executions else None
