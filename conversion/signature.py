"""Load a SavedModel's serving signature and check it against the encoder contract.

Contract: `serving_default(input_ids: int32 [batch, seq]) -> {"embedding": float32 [batch, dim]}`.
TensorFlow is imported here only, so that importing the package stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.errors import ConversionError, one_line

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "embedding"


@dataclass(frozen=True)
class ServingFunction:
    """The serving signature, and the loaded object that owns its variables (keep it alive)."""

    function: Any  # tf ConcreteFunction
    owner: Any
    dim: int

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.function(**{INPUT_NAME: tf.constant(input_ids, tf.int32)})[OUTPUT_NAME].numpy()


def load_serving_function(path: Path, dim: int) -> ServingFunction:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TF raises many unrelated types for a bad SavedModel
        raise ConversionError(f"cannot load SavedModel {path}: {one_line(exc)}") from exc
    signatures = dict(getattr(loaded, "signatures", {}))
    if SIGNATURE_KEY not in signatures:
        found = ", ".join(sorted(signatures)) or "none"
        raise ConversionError(
            f"SavedModel {path} has no {SIGNATURE_KEY!r} signature (signatures: {found})"
        )
    function = signatures[SIGNATURE_KEY]
    check_signature(function, dim, f"{path} {SIGNATURE_KEY}")
    return ServingFunction(function=function, owner=loaded, dim=dim)


def check_signature(function: Any, dim: int, where: str) -> None:
    import tensorflow as tf

    args, kwargs = function.structured_input_signature
    if args or set(kwargs) != {INPUT_NAME}:
        names = sorted(kwargs) + [f"<positional {i}>" for i in range(len(args))]
        raise ConversionError(f"{where}: inputs must be exactly [{INPUT_NAME!r}], got {names}")
    spec = kwargs[INPUT_NAME]
    if spec.dtype != tf.int32 or spec.shape.rank != 2:
        raise ConversionError(
            f"{where}: {INPUT_NAME} must be int32 [batch, seq], got {spec.dtype.name} {spec.shape}"
        )
    outputs = function.structured_outputs
    if not isinstance(outputs, dict) or OUTPUT_NAME not in outputs:
        names = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
        raise ConversionError(f"{where}: outputs must include {OUTPUT_NAME!r}, got {names}")
    out = outputs[OUTPUT_NAME]
    if out.dtype != tf.float32 or out.shape.rank != 2:
        raise ConversionError(
            f"{where}: {OUTPUT_NAME} must be float32 [batch, dim], got {out.dtype.name} {out.shape}"
        )
    if out.shape[-1] is not None and out.shape[-1] != dim:
        raise ConversionError(
            f"{where}: {OUTPUT_NAME} has dim {out.shape[-1]}, encoder_config.json says {dim}"
        )
