"""How a vector is stored: little-endian float32 bytes (SQLite BLOB, PostgreSQL bytea)."""

from __future__ import annotations

import numpy as np

VECTOR_DTYPE = np.dtype("<f4")


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=VECTOR_DTYPE).tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=VECTOR_DTYPE).astype(np.float32)


def blob_size(dim: int) -> int:
    """Bytes of a valid vector of this dimension (a vector of another size is missing)."""
    return dim * VECTOR_DTYPE.itemsize
