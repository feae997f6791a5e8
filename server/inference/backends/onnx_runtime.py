"""The embedded backend: ONNX Runtime in this process, on threads of its own.

`instances` sessions of the model, each on a thread of its own and with its share of
the cores as intra-op threads; the batcher sends up to that many batches at once
(`--model-instances`). Without spinning, which would take the cores HTTP needs, a
second intra-op thread mostly waits at each operator's barrier: two one-thread
sessions side by side embed about 1.5 times what one two-thread session does
(BENCHMARKS.md, "The front end, third pass"). The threads keep the event loop free.

A query alone would then have one core where it could have all of them: with
`lone_threads` above an instance's threads, one more session of that many threads
embeds each batch that starts while no other is running (`--lone-batch-threads`).

Re-embedding every article for a new version runs apart (`embed_background`): a
second session of the same model, created on first use with `background_threads`
intra-op threads (default 1) on a thread of its own, concurrently with queries.
Measured on 2 cores (BENCHMARKS.md, "Live model upgrade"): a 32-token query takes
1.1–1.4x its time alone next to a one-thread session embedding 256-token
articles without pause; taking turns instead, a query arriving during a step
waits up to a whole article (56–61 ms), and an upgrade's p99 was 4.5x steady.

All sessions are built from model bytes read and hashed in one go
(`ModelVersion.read_model`), never from the path: a model.onnx replaced after
verification is refused (the background session fails with the reason), not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kbrec.repository import ModelVersion, RepositoryError
from server.inference.backends.base import (
    BackendError,
    BackendLoadError,
    BackendUnavailable,
    VersionBackend,
    normalize_rows,
)
from server.inference.backends.execution_providers import (
    execution_providers,
    require_device,
    require_on_device,
    run_bound,
    tensorrt_cache_dir,
)
from server.inference.cores import usable_cores

log = logging.getLogger(__name__)


def load_session(
    model: str | bytes,
    intra_op_threads: int,
    device: str = "cpu",
    cache_dir: Path | None = None,
) -> ort.InferenceSession:
    """A session of `model` (the serialized ONNX model, or a path to one) on `device`
    (execution_providers; `cache_dir`: TensorRT's engines)."""
    options = ort.SessionOptions()
    # 0: one thread per usable core. ONNX Runtime's own default counts the machine's
    # cores, so a server pinned to one core got two threads taking turns on it
    # (measured: 736 → 463 µs of server CPU per request, BENCHMARKS.md).
    options.intra_op_num_threads = intra_op_threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads would spin and take CPU from HTTP work and tokenization on
    # the same cores (measured: 5–21 % less server CPU per request, BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = execution_providers(device, cache_dir or Path.cwd())
    session = ort.InferenceSession(model, options, providers=providers)
    require_on_device(session.get_providers(), device)
    return session


def load_verified_session(
    version: ModelVersion, intra_op_threads: int, device: str = "cpu"
) -> ort.InferenceSession:
    """A session of the very bytes that match the version's recorded sha256."""
    cache_dir = tensorrt_cache_dir(version.model_sha256)
    return load_session(version.read_model(), intra_op_threads, device, cache_dir)


class OnnxRuntimeBackend(VersionBackend):
    """`EmbeddingBackend` for one verified version's `model.onnx`."""

    isolates_background = True

    def __init__(
        self,
        version: ModelVersion,
        sessions: Sequence[ort.InferenceSession],
        executor: ThreadPoolExecutor,
        background_threads: int = 1,
        device: str = "cpu",
        lone: ort.InferenceSession | None = None,
    ) -> None:
        """`sessions`: the instances, one batch at a time each (the executor has a
        thread per instance); `lone`: the session for a batch that runs alone."""
        super().__init__(version)
        if not sessions:
            raise ValueError("a backend needs at least one session")
        self._device = device
        self._session = sessions[0]  # for the model's signature
        self._idle: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for session in sessions:
            self._idle.put(session)
        self.instances = len(sessions)
        self._lone = lone
        self._running = 0  # batches being embedded, under _picking
        self._picking = threading.Lock()
        self._executor = executor
        self._background_threads = background_threads
        self._background: ort.InferenceSession | None = None
        self._background_executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"ort-v{version.number}-background"
        )

    @classmethod
    async def open(
        cls,
        version: ModelVersion,
        intra_op_threads: int = 0,
        background_threads: int = 1,
        device: str = "cpu",
        instances: int = 1,
        lone_threads: int = 0,
    ) -> OnnxRuntimeBackend:
        """Load `instances` sessions off the event loop (each its own copy of the weights),
        and a lone-batch session if `lone_threads` is more than an instance has, and check
        the model with a probe batch."""
        executor = ThreadPoolExecutor(
            max_workers=instances, thread_name_prefix=f"ort-v{version.number}"
        )
        loop = asyncio.get_running_loop()
        try:
            sessions = [
                await loop.run_in_executor(
                    executor, load_verified_session, version, intra_op_threads, device
                )
                for _ in range(instances)
            ]
            instance_threads = intra_op_threads or usable_cores()
            lone = None
            if device == "cpu" and lone_threads > instance_threads:
                lone = await loop.run_in_executor(
                    executor, load_verified_session, version, lone_threads, device
                )
        except RepositoryError as exc:
            executor.shutdown(wait=False)
            raise BackendLoadError(f"version {version.number}: {exc}") from exc
        except Exception as exc:  # ORT raises its own pybind exception types
            executor.shutdown(wait=False)
            raise BackendLoadError(f"version {version.number}: model.onnx: {exc}") from exc
        backend = cls(version, sessions, executor, background_threads, device, lone)
        try:
            backend._check_signature()
            await backend._check_probe()
        except BackendError as exc:
            await backend.close()
            raise BackendLoadError(f"version {version.number}: {exc}") from exc
        log.info(
            "ONNX Runtime backend: version %d, dim %d, max length %d, providers %s, "
            "%d instance(s) of %d intra-op thread(s)%s",
            version.number,
            backend.dim,
            backend.max_length,
            sessions[0].get_providers(),
            instances,
            instance_threads,
            "" if lone is None else f", a batch alone on {lone_threads}",
        )
        return backend

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        self._check_input(token_ids)
        loop = asyncio.get_running_loop()
        try:
            (vectors,) = await loop.run_in_executor(self._executor, self._run_groups, [token_ids])
            return vectors
        except RuntimeError as exc:  # executor shut down under us
            raise BackendUnavailable(str(exc)) from exc

    async def embed_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        for token_ids in groups:
            self._check_input(token_ids)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run_groups, groups)
        except RuntimeError as exc:  # executor shut down under us
            raise BackendUnavailable(str(exc)) from exc

    async def embed_background(self, token_ids: np.ndarray) -> np.ndarray:
        self._check_input(token_ids)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._background_executor, self._run_background, token_ids
            )
        except RuntimeError as exc:  # executor shut down under us
            raise BackendUnavailable(str(exc)) from exc

    async def end_background(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(RuntimeError):  # already shut down
            await loop.run_in_executor(self._background_executor, self._drop_background)

    async def health(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Waits for runs still in flight without blocking the event loop.
        await asyncio.to_thread(self._executor.shutdown, True)
        await asyncio.to_thread(self._background_executor.shutdown, True)
        self._background = None

    def _run_background(self, token_ids: np.ndarray) -> np.ndarray:
        if self._background is None:
            # Read and hashed again rather than kept: the bytes would cost a model's
            # size per live version for as long as it lives.
            try:
                self._background = load_verified_session(
                    self._version, self._background_threads, self._device
                )
            except Exception as exc:  # RepositoryError, or ORT's own pybind exception types
                raise BackendError(f"background session: {exc}") from exc
            log.info(
                "version %d: background session, %d thread(s)",
                self.model_version,
                self._background_threads,
            )
        return self._run(token_ids, self._background)

    def _run_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        session = self._take_session()
        try:
            return [self._run(token_ids, session) for token_ids in groups]
        finally:
            self._give_back(session)

    def _take_session(self) -> ort.InferenceSession:
        """The lone-batch session when no other batch is running, else an instance (one
        executor thread per instance: an idle one is always there to take, also while
        the lone session is busy)."""
        with self._picking:
            self._running += 1
            if self._running == 1 and self._lone is not None:
                return self._lone
        return self._idle.get()

    def _give_back(self, session: ort.InferenceSession) -> None:
        with self._picking:
            self._running -= 1
        if session is not self._lone:
            self._idle.put(session)

    def _drop_background(self) -> None:
        self._background = None

    def _run(self, token_ids: np.ndarray, session: ort.InferenceSession) -> np.ndarray:
        try:
            if self._device == "cuda":
                vectors = run_bound(session, self._input_name, self._output_name, token_ids)
            else:
                (vectors,) = session.run([self._output_name], {self._input_name: token_ids})
        except Exception as exc:  # ORT's pybind errors share no useful base class
            raise BackendError(f"ONNX Runtime run failed: {exc}") from exc
        vectors = np.asarray(vectors)
        if vectors.shape != (token_ids.shape[0], self.dim):
            raise BackendError(
                f"model returned shape {vectors.shape}, expected ({token_ids.shape[0]}, {self.dim})"
            )
        return normalize_rows(vectors.astype(np.float32, copy=False))

    def _check_signature(self) -> None:
        inputs = {node.name for node in self._session.get_inputs()}
        outputs = {node.name for node in self._session.get_outputs()}
        if self._input_name not in inputs:
            raise BackendError(f"model has no input {self._input_name!r} (has {sorted(inputs)})")
        if self._output_name not in outputs:
            raise BackendError(f"model has no output {self._output_name!r} (has {sorted(outputs)})")

    async def _check_probe(self) -> None:
        """A two-row batch of different lengths must give two unit vectors of `dim`."""
        probe = np.array([[2, 5, 3], [2, 3, 0]], dtype=np.int32)
        vectors = await self.embed(probe)
        if not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
            raise BackendError("probe embeddings are not unit vectors")


@dataclass(frozen=True)
class OnnxRuntimeProvider:
    """`BackendProvider` of the embedded default: `instances` ONNX Runtime sessions per
    version."""

    intra_op_threads: int = 0
    background_threads: int = 1
    device: str = "cpu"  # or cuda (execution_providers)
    instances: int = 1  # sessions that embed batches at once (`--model-instances`)
    lone_threads: int = 0  # a session for a batch alone, if above intra_op_threads

    def __post_init__(self) -> None:
        require_device(self.device)  # a missing GPU build fails here, not as a failed version

    async def open(self, version: ModelVersion) -> OnnxRuntimeBackend:
        return await OnnxRuntimeBackend.open(
            version,
            self.intra_op_threads,
            self.background_threads,
            self.device,
            self.instances,
            self.lone_threads,
        )

    async def hold(self, versions: Collection[ModelVersion]) -> None:
        """In-process: a version is held exactly while its backend is open."""
