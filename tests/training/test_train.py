"""Fine-tuning and export: loss goes down; the export honours the serving contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from kbrec.records import read_articles, read_queries
from kbrec.tokenization import TextTokenizer
from training.encoder import EncoderConfig, build_encoder
from training.pretrained import tokenizer_path
from training.train import TrainConfig, train


def test_contrastive_training_lowers_the_loss(tiny_corpus: Path) -> None:
    config = EncoderConfig(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_length=64, dropout=0
    )
    model = build_encoder(config, seed=0)
    summary = train(
        model,
        TextTokenizer(tokenizer_path(), config.max_length),
        read_articles(tiny_corpus / "articles.jsonl"),
        read_queries(tiny_corpus / "queries.jsonl"),
        TrainConfig(
            max_steps=40,
            batch_size=8,
            learning_rate=2e-3,
            warmup_steps=2,
            freeze_layers=0,
            query_length=16,
            article_length=48,
            seed=0,
        ),
        progress=False,
    )
    assert summary["steps"] == 40
    assert summary["final_loss"] < 0.7 * summary["first_loss"]


def test_export_has_the_serving_signature_and_files(tiny_export_dir: Path) -> None:
    loaded = tf.saved_model.load(str(tiny_export_dir))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert set(inputs) == {"input_ids"}
    assert inputs["input_ids"].dtype == tf.int32
    assert inputs["input_ids"].shape.as_list() == [None, None]
    out = signature(input_ids=tf.constant([[101, 7592, 102, 0]], dtype=tf.int32))
    assert set(out) == {"embedding"}
    embedding = out["embedding"].numpy()
    assert embedding.shape == (1, 32)
    assert abs(float(np.linalg.norm(embedding)) - 1.0) < 1e-5
    config = json.loads((tiny_export_dir / "encoder_config.json").read_text())
    assert config["max_length"] == 64 and config["hidden_size"] == 32
    metrics = json.loads((tiny_export_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 30
    assert (tiny_export_dir / "tokenizer.json").is_file()
