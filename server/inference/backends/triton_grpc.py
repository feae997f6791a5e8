"""The Triton backend: the encoder runs in a Triton Inference Server, reached over gRPC.

kbrec keeps the tokenizer, metadata and article vectors of the version it
serves; Triton only runs the model. Every call names that version
(`model_version=str(n)`), so a query vector can never come from another
version than the article vectors it is ranked against, whatever Triton has
loaded meanwhile (its config keeps the two newest versions loaded).

Opening checks that Triton serves the version with the signature metadata.json
describes (`input_ids` INT32 [-1, -1] → `embedding` FP32 [-1, dim]) and runs a
probe batch; a mismatch is a `BackendLoadError` and the service does not start.
Afterwards every failure (Triton unreachable, deadline exceeded, model not
ready) is a `BackendUnavailable`: the callers of the batch get a 503, and the
next batch tries again. `health()` asks Triton (server live, model version
ready) at most once per `HEALTH_TTL_S`, so /readyz turns false while
Triton is away and true again by itself once it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from kbrec.repository import MODEL_NAME, ModelVersion
from server.inference.backends.base import (
    BackendError,
    BackendLoadError,
    BackendUnavailable,
    VersionBackend,
    normalize_rows,
)

log = logging.getLogger(__name__)

URL_SCHEME: Final = "grpc://"
# Health answers are reused this long: /readyz polls (and load balancers) stay cheap.
HEALTH_TTL_S: Final = 0.5
# gRPC backs off up to 2 minutes between reconnects by default; Triton coming back must
# be noticed within about a second, so cap the backoff (the channel redials itself).
CHANNEL_ARGS: Final[list[tuple[str, Any]]] = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# A probe of two rows of different lengths (padded), as the embedded backend checks.
PROBE: Final = np.array([[2, 5, 3], [2, 3, 0]], dtype=np.int32)


def grpc_target(url: str) -> str:
    """'grpc://host:port' → 'host:port' (what gRPC dials)."""
    if not url.startswith(URL_SCHEME):
        raise ValueError(f"Triton URL must be grpc://HOST:PORT, got {url!r}")
    target = url.removeprefix(URL_SCHEME).rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Triton URL must be grpc://HOST:PORT, got {url!r}")
    return target


def unavailable(what: str, exc: InferenceServerException) -> BackendUnavailable:
    """Triton's and gRPC's errors (status e.g. StatusCode.UNAVAILABLE) as one type."""
    status = exc.status() or "error"
    return BackendUnavailable(f"Triton {what}: {status}: {exc.message()}")


class TritonGrpcBackend(VersionBackend):
    """`EmbeddingBackend` for one model version served by Triton."""

    def __init__(
        self,
        version: ModelVersion,
        client: triton.InferenceServerClient,
        *,
        url: str,
        timeout_s: float,
        model: str = MODEL_NAME,
    ) -> None:
        super().__init__(version)
        self._client = client
        self._url = url
        self._timeout_s = timeout_s
        self._model = model
        self._model_version = str(version.number)
        self._health: tuple[float, bool] | None = None  # (checked at, answer)
        self._health_check: asyncio.Task[bool] | None = None

    @classmethod
    async def open(
        cls, version: ModelVersion, *, url: str, timeout_s: float, model: str = MODEL_NAME
    ) -> TritonGrpcBackend:
        """Connect, check Triton's metadata against metadata.json, run a probe batch."""
        try:
            target = grpc_target(url)
        except ValueError as exc:
            raise BackendLoadError(str(exc)) from exc
        client = triton.InferenceServerClient(target, channel_args=CHANNEL_ARGS)
        backend = cls(version, client, url=url, timeout_s=timeout_s, model=model)
        try:
            await backend._check_metadata()
            vectors = await backend.embed(PROBE)
            if not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
                raise BackendError("probe embeddings are not unit vectors")
        except BackendError as exc:
            await backend.close()
            raise BackendLoadError(
                f"version {version.number} on Triton at {url} (model {model!r}): {exc}"
            ) from exc
        log.info(
            "Triton backend: %s, model %r version %d, dim %d, max length %d, timeout %.1f s",
            url,
            model,
            version.number,
            backend.dim,
            backend.max_length,
            timeout_s,
        )
        return backend

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        self._check_input(token_ids)
        ids = InferInput(self._input_name, list(token_ids.shape), "INT32")
        ids.set_data_from_numpy(np.ascontiguousarray(token_ids))
        try:
            result = await self._client.infer(
                self._model,
                [ids],
                model_version=self._model_version,
                outputs=[InferRequestedOutput(self._output_name)],
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as exc:
            self._health = None  # the next /readyz asks Triton again
            raise unavailable("inference failed", exc) from exc
        vectors = result.as_numpy(self._output_name)
        if vectors is None or vectors.shape != (token_ids.shape[0], self.dim):
            shape = None if vectors is None else vectors.shape
            raise BackendError(
                f"Triton returned shape {shape}, expected ({token_ids.shape[0]}, {self.dim})"
            )
        return normalize_rows(vectors.astype(np.float32, copy=False))

    async def embed_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Concurrent requests: Triton overlaps them (instances, pipelining) where a loop
        # would pay one round trip after another.
        return list(await asyncio.gather(*(self.embed(group) for group in groups)))

    async def health(self) -> bool:
        """Triton live and this version ready; cached for HEALTH_TTL_S.

        Not Triton's server readiness: it is false while any version loads or unloads
        (an upgrade loads the next version next to this one), which says nothing about
        the version this backend uses.
        """
        if self._closed:
            return False
        now = time.monotonic()
        if self._health is not None and now - self._health[0] < HEALTH_TTL_S:
            return self._health[1]
        # Concurrent callers share one check instead of each asking Triton.
        if self._health_check is None or self._health_check.done():
            self._health_check = asyncio.get_running_loop().create_task(self._ask_health())
        answer = await asyncio.shield(self._health_check)
        self._health = (time.monotonic(), answer)
        return answer

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._health_check is not None:
            self._health_check.cancel()
        await self._client.close()

    async def _ask_health(self) -> bool:
        timeout = self._timeout_s
        try:
            answers = await asyncio.gather(
                self._client.is_server_live(client_timeout=timeout),
                self._client.is_model_ready(
                    self._model, self._model_version, client_timeout=timeout
                ),
            )
        except InferenceServerException as exc:
            log.warning("Triton health check failed: %s", unavailable("health", exc))
            return False
        if not all(answers):
            log.warning("Triton at %s: live, model version ready = %s", self._url, answers)
        return all(answers)

    async def _check_metadata(self) -> None:
        """Triton's model metadata must match this version's metadata.json."""
        try:
            ready = await self._client.is_model_ready(
                self._model, self._model_version, client_timeout=self._timeout_s
            )
            if not ready:
                raise BackendError(f"Triton has not loaded version {self._model_version}")
            metadata = await self._client.get_model_metadata(
                self._model, self._model_version, client_timeout=self._timeout_s
            )
        except InferenceServerException as exc:
            raise unavailable("metadata", exc) from exc
        inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
        outputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.outputs}
        expected_in = {self._input_name: ("INT32", [-1, -1])}
        expected_out = {self._output_name: ("FP32", [-1, self.dim])}
        if inputs != expected_in or outputs != expected_out:
            raise BackendError(
                f"Triton's model has inputs {inputs} and outputs {outputs}; metadata.json "
                f"expects {expected_in} → {expected_out}"
            )
