"""Contrastive fine-tuning of the encoder (in-batch softmax over account batches)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from kbrec.records import Article, Query
from kbrec.tokenization import TextTokenizer
from training.encoder import TextEncoder
from training.pairs import account_batches, build_pairs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = 150
    batch_size: int = 32
    learning_rate: float = 6e-5
    warmup_steps: int = 15
    weight_decay: float = 0.01
    query_length: int = 32
    article_length: int = 128
    # Cosine similarities live in [-1, 1]; the temperature spreads them for the softmax.
    scale: float = 20.0
    # Embeddings and the first N transformer layers stay frozen: keeps what the
    # pretrained encoder knows out of domain, and makes each step cheaper.
    freeze_layers: int = 2
    seed: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def freeze_lower_layers(model: TextEncoder, count: int) -> None:
    frozen = count > 0
    for layer in (
        model.word_embeddings,
        model.position_embeddings,
        model.type_embeddings,
        model.embedding_norm,
    ):
        layer.trainable = not frozen
    for index, layer in enumerate(model.encoder_layers):
        layer.trainable = index >= count


def _schedule(config: TrainConfig) -> keras.optimizers.schedules.LearningRateSchedule:
    decay_steps = max(config.max_steps - config.warmup_steps, 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=decay_steps,
        warmup_target=config.learning_rate,
        warmup_steps=config.warmup_steps,
        alpha=0.1,
    )


def train(
    model: TextEncoder,
    tokenizer: TextTokenizer,
    articles: Sequence[Article],
    queries: Sequence[Query],
    config: TrainConfig,
    progress: bool = True,
) -> dict[str, float]:
    """Fine-tune `model` in place; returns loss figures and timing."""
    if config.max_steps <= 0:
        return {"steps": 0}
    keras.utils.set_random_seed(config.seed)
    pairs = build_pairs(articles, queries)
    batches = account_batches(pairs, config.batch_size, config.seed)
    freeze_lower_layers(model, config.freeze_layers)
    optimizer = keras.optimizers.AdamW(
        learning_rate=_schedule(config), weight_decay=config.weight_decay
    )
    variables = model.trainable_variables
    optimizer.build(variables)
    log.info(
        "fine-tuning on %d pairs: %d steps of %d, %d trainable tensors",
        len(pairs),
        config.max_steps,
        config.batch_size,
        len(variables),
    )

    @tf.function(reduce_retracing=True)
    def step(anchor_ids: tf.Tensor, positive_ids: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            anchors = model(anchor_ids, training=True)
            positives = model(positive_ids, training=True)
            logits = tf.matmul(anchors, positives, transpose_b=True) * config.scale
            labels = tf.range(tf.shape(logits)[0])
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            )
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(config.max_steps), desc="fine-tune", unit="step", disable=not progress)
    for _ in bar:
        batch = next(batches)
        anchor_ids = tokenizer.encode_padded([p.anchor for p in batch], config.query_length)
        positive_ids = tokenizer.encode_padded([p.positive for p in batch], config.article_length)
        losses.append(float(step(tf.constant(anchor_ids), tf.constant(positive_ids))))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    elapsed = time.perf_counter() - started
    return {
        "steps": config.max_steps,
        "pairs": len(pairs),
        "first_loss": float(np.mean(losses[:10])),
        "final_loss": float(np.mean(losses[-10:])),
        "seconds": round(elapsed, 1),
        "seconds_per_step": round(elapsed / config.max_steps, 3),
    }
