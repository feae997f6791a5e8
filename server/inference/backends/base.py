"""The backend contract: token ids in, unit vectors out, for one model version.

A backend instance serves exactly one model version, so the version a vector
came from is the `model_version` of the backend that made it; a live upgrade
opens a second backend for the new version instead of mutating this one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from kbrec.repository import ModelVersion

# A norm below this means the model produced a degenerate vector (e.g. all padding).
MIN_NORM = 1e-12
# Where the embedded ONNX Runtime backend runs its model (`--device`).
ENCODER_DEVICES = ("cpu", "cuda")


class BackendError(Exception):
    """The backend failed a call; callers of the batch get it (mapped to 503)."""


class BackendUnavailable(BackendError):
    """The backend is closed, broken or not reachable."""


class BackendLoadError(BackendError):
    """A model version could not be loaded or failed its checks."""


@runtime_checkable
class EmbeddingBackend(Protocol):
    @property
    def model_version(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def max_length(self) -> int:
        """Longest token sequence the model accepts (inputs are truncated to it)."""
        ...

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        """int32 [batch, seq] (0-padded) → float32 [batch, dim] unit vectors."""
        ...

    async def embed_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        """`embed` of each group (a batch's length buckets), in one call: one hop to
        the embedded backend's thread, concurrent requests to a remote one."""
        ...

    @property
    def isolates_background(self) -> bool:
        """True if `embed_background` runs on capacity of its own, next to `embed`."""
        ...

    async def embed_background(self, token_ids: np.ndarray) -> np.ndarray:
        """As `embed`, for re-embedding articles in the background."""
        ...

    async def end_background(self) -> None:
        """Free what `embed_background` holds (the re-embedding is over)."""
        ...

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


class BackendProvider(Protocol):
    """One kind of backend (embedded ONNX Runtime, Triton): opens a backend per version
    and tells the model server which versions to hold."""

    async def open(self, version: ModelVersion) -> EmbeddingBackend:
        """A backend serving exactly `version`; `BackendLoadError` if it cannot."""
        ...

    async def hold(self, versions: Collection[ModelVersion]) -> None:
        """Make the model server hold exactly `versions` loaded (in-process: nothing to
        do; Triton: load these, unload the rest). `BackendLoadError` if it cannot."""
        ...


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows; the exported model normalises already, this guards it."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms < MIN_NORM):
        raise BackendError("model returned a non-finite or zero embedding")
    return (vectors / norms).astype(np.float32, copy=False)


class VersionBackend:
    """What every backend shares: the version it serves and the input check.

    Subclasses set `_closed` when closed and implement embed, health and close.
    """

    def __init__(self, version: ModelVersion) -> None:
        self._version = version
        self._input_name = version.metadata.input_name
        self._output_name = version.metadata.output_name
        self._closed = False

    @property
    def model_version(self) -> int:
        return self._version.number

    @property
    def dim(self) -> int:
        return self._version.metadata.dim

    @property
    def max_length(self) -> int:
        return self._version.metadata.max_length

    # A remote backend (Triton) has no capacity of kbrec's to set apart: background
    # work is the same call, ordered behind queries by the batcher's ComputeGate.
    isolates_background = False

    async def embed(self, token_ids: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    async def embed_groups(self, groups: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [await self.embed(group) for group in groups]

    async def embed_background(self, token_ids: np.ndarray) -> np.ndarray:
        return await self.embed(token_ids)

    async def end_background(self) -> None:
        return None

    def _check_input(self, token_ids: np.ndarray) -> None:
        """Raise unless open and given int32 [batch, seq] within the max length."""
        if self._closed:
            raise BackendUnavailable(f"version {self.model_version} backend is closed")
        if token_ids.dtype != np.int32 or token_ids.ndim != 2:
            raise BackendError(
                f"expected int32 [batch, seq], got {token_ids.dtype} {token_ids.shape}"
            )
        if token_ids.shape[1] > self.max_length:
            raise BackendError(f"sequence of {token_ids.shape[1]} > max length {self.max_length}")
