"""The Keras encoder: masking, normalisation, and the MiniLM port against golden embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kbrec.tokenization import TextTokenizer, pad_batch
from training.encoder import EncoderConfig, build_encoder

GOLDEN = Path(__file__).parents[1] / "fixtures" / "minilm_golden.json"
TINY = EncoderConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_length=64)


def test_padding_does_not_change_the_embedding() -> None:
    model = build_encoder(TINY, seed=3)
    ids = [101, 2129, 2079, 1045, 2193, 5530, 102]
    alone = model(pad_batch([ids])).numpy()
    padded = model(pad_batch([ids, [101, 102]], length=20)).numpy()
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-6)


def test_embeddings_are_unit_vectors_and_all_padding_is_finite() -> None:
    model = build_encoder(TINY, seed=3)
    out = model(tf.constant([[101, 7592, 102, 0], [0, 0, 0, 0]], dtype=tf.int32)).numpy()
    assert out.shape == (2, 32)
    assert out.dtype == np.float32
    assert np.linalg.norm(out[0]) == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.isfinite(out))


def test_config_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of num_heads"):
        EncoderConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="max_length"):
        EncoderConfig(max_position=128, max_length=256)


@pytest.mark.slow
def test_minilm_port_matches_the_reference_embeddings() -> None:
    from training.pretrained import load_minilm, tokenizer_path

    golden = json.loads(GOLDEN.read_text())
    tokenizer = TextTokenizer(tokenizer_path(), golden["max_seq_length"])
    ids = tokenizer.encode(golden["sentences"])
    # Same token ids as sentence-transformers fed its model, truncation included.
    assert ids == golden["token_ids"]
    model = load_minilm()
    ours = model(pad_batch(ids)).numpy()
    reference = np.asarray(golden["embeddings"], dtype=np.float32)
    assert np.abs(ours - reference).max() <= 1e-4
