"""Triton python-backend model: the encoder's model.onnx run by ONNX Runtime on the CPU.

`kbrec convert` copies this file into every version directory, beside
model.onnx. It runs inside Triton's python-backend stub, in the stub's own
environment (numpy<2 + onnxruntime): it must not import kbrec or anything else
from this repository.

Batching: the config allows ragged batches, so one execute() call may hold
requests of different lengths. They are right-padded with 0 to the longest and
run as one ONNX Runtime call; padding is safe because the model masks id 0.
A malformed request gets its own error; an ONNX Runtime failure fails every
request of the batch.

Bytecode: Triton's poll mode reloads a model whenever its version directory
changes, and a `__pycache__/` written there by this import is such a change.
The stub imports this file as `<version>.model`, and Python writes the .pyc
*before* executing any line of it, so `sys.dont_write_bytecode` below only
covers later imports. `kbrec convert` therefore also places a regular file
named `__pycache__` in the version directory: Python then cannot create the
cache directory and silently skips writing bytecode, for any Python version.
Launching tritonserver with PYTHONDONTWRITEBYTECODE=1 is the belt to these braces.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True

import json  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

INPUT_NAME = "input_ids"
OUTPUT_NAME = "embedding"
MODEL_FILE = "model.onnx"
INTRA_OP_THREADS_PARAM = "intra_op_threads"
PAD_ID = 0


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = _intra_op_threads(config)  # 0: ONNX Runtime decides
        path = Path(__file__).resolve().parent / MODEL_FILE
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        accepted: list[tuple[int, np.ndarray]] = []
        for index, request in enumerate(requests):
            try:
                accepted.append((index, _input_ids(request)))
            except ValueError as exc:
                responses[index] = _error_response(str(exc))
        if accepted:
            try:
                embeddings = self._embed([ids for _, ids in accepted])
            except Exception as exc:  # ORT errors share no base class; every caller must hear
                for index, _ in accepted:
                    responses[index] = _error_response(f"ONNX Runtime failed: {exc}")
            else:
                # zip(strict=) needs Python 3.10; the stub's Python may be older.
                for (index, _), embedding in zip(accepted, embeddings):  # noqa: B905
                    tensor = pb_utils.Tensor(OUTPUT_NAME, embedding)
                    responses[index] = pb_utils.InferenceResponse(output_tensors=[tensor])
        return responses

    def finalize(self) -> None:
        self._session = None

    def _embed(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """One ONNX Runtime call for all requests, split back per request."""
        rows = [ids.shape[0] for ids in batches]
        width = max(max(ids.shape[1] for ids in batches), 1)
        padded = np.full((sum(rows), width), PAD_ID, dtype=np.int32)
        start = 0
        for ids in batches:
            padded[start : start + ids.shape[0], : ids.shape[1]] = ids
            start += ids.shape[0]
        (embeddings,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: padded})
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        return np.split(embeddings, np.cumsum(rows)[:-1])


def _intra_op_threads(config: dict[str, Any]) -> int:
    value = config.get("parameters", {}).get(INTRA_OP_THREADS_PARAM, {}).get("string_value", "")
    try:
        threads = int(value) if value else 0
    except ValueError:
        raise ValueError(f"{INTRA_OP_THREADS_PARAM} must be an integer, got {value!r}") from None
    if threads < 0:
        raise ValueError(f"{INTRA_OP_THREADS_PARAM} must be >= 0, got {threads}")
    return threads


def _input_ids(request: Any) -> np.ndarray:
    tensor = pb_utils.get_input_tensor_by_name(request, INPUT_NAME)
    if tensor is None:
        raise ValueError(f"missing input {INPUT_NAME!r}")
    ids = tensor.as_numpy()
    if ids.ndim != 2:
        raise ValueError(f"{INPUT_NAME} must be [batch, seq], got shape {list(ids.shape)}")
    if ids.dtype != np.int32:
        raise ValueError(f"{INPUT_NAME} must be int32, got {ids.dtype}")
    return ids


def _error_response(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
