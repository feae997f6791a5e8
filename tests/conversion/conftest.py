"""Exports to convert: stand-in SavedModels for the error paths, and published versions.

End-to-end tests convert `tiny_export_dir` (tests/conftest.py): the real
encoder graph at hidden 32 / 2 layers, trained briefly and exported by
`kbrec train`, so the conversion meets the same tf2onnx behaviour as MiniLM in
seconds. The stand-ins use a small WordPiece vocabulary generated here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from conversion.sample_texts import SAMPLE_TEXTS

VOCAB_SIZE = 1500
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_tokenizer(path: Path) -> Path:
    """A BERT-style WordPiece tokenizer.json whose words cover SAMPLE_TEXTS; [PAD] = 0."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words = sorted(
        {
            word
            for text in SAMPLE_TEXTS
            for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))
        }
    )
    chars = sorted({c for word in words for c in word})
    # dict.fromkeys: single-character words are also in `chars`.
    vocab = list(dict.fromkeys([*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars), *words]))
    vocab += [f"[unused{i}]" for i in range(VOCAB_SIZE - len(vocab))]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    tokenizer = Tokenizer(
        models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer") / "tokenizer.json")


StandIn = Callable[..., Path]


@pytest.fixture
def stand_in_export(tokenizer_file: Path, tmp_path: Path) -> StandIn:
    """Factory: a SavedModel from a small tf.Module whose signature can break the contract."""

    def make(
        *,
        name: str = "stand_in",
        signature_key: str = "serving_default",
        input_name: str = "input_ids",
        input_dtype: str = "int32",
        output_key: str = "embedding",
        use_erfc: bool = False,
        dim: int = 8,
        max_length: int = 16,
    ) -> Path:
        import numpy as np
        import tensorflow as tf

        class StandIn(tf.Module):
            def __init__(self) -> None:
                super().__init__()
                rng = np.random.default_rng(0)
                self.table = tf.Variable(rng.normal(size=(VOCAB_SIZE, dim)).astype("float32"))

            @tf.function(input_signature=[tf.TensorSpec([None, None], input_dtype, input_name)])
            def serve(self, ids: tf.Tensor) -> dict[str, tf.Tensor]:
                ids = tf.cast(ids, tf.int32)
                mask = tf.cast(tf.not_equal(ids, 0), tf.float32)[..., None]
                summed = tf.reduce_sum(tf.gather(self.table, ids) * mask, axis=1)
                pooled = summed / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
                if use_erfc:  # what Keras' exact gelu lowers to; tf2onnx cannot convert it
                    pooled = tf.math.erfc(pooled)
                return {output_key: tf.math.l2_normalize(pooled, axis=-1)}

        module = StandIn()
        out = tmp_path / name
        tf.saved_model.save(module, str(out), signatures={signature_key: module.serve})
        (out / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
        config = {"max_length": max_length, "dim": dim}
        (out / "encoder_config.json").write_text(json.dumps(config), encoding="utf-8")
        return out

    return make


@dataclass(frozen=True)
class Published:
    repository: Path
    first: Any  # conversion.convert.ConvertResult, python backend
    second: Any  # the same export again, onnxruntime backend
    lines: list[str]


@pytest.fixture(scope="session")
def published(tiny_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """The tiny encoder converted twice into one repository: versions 1 and 2."""
    from conversion.convert import ConvertOptions, convert

    repository = tmp_path_factory.mktemp("published") / "model_repository"
    lines: list[str] = []
    first = convert(ConvertOptions(tiny_export_dir, repository, backend="python"), lines.append)
    second = convert(ConvertOptions(tiny_export_dir, repository), lines.append)
    return Published(repository, first, second, lines)
