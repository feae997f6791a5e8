"""The backend contract: token ids in, unit vectors out, for one model version.

A backend instance serves exactly one model version, so the version a vector
came from is the `model_version` of the backend that made it; a live upgrade
opens a second backend for the new version instead of mutating this one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from server.model_versions import ModelVersion


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

    async def health(self) -> bool: ...

    async def close(self) -> None: ...


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
