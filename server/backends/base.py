"""The backend contract: token ids in, unit vectors out, for one model version.

A backend instance serves exactly one model version, so the version a vector
came from is the `model_version` of the backend that made it; a live upgrade
opens a second backend for the new version instead of mutating this one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


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
