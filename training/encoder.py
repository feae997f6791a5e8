"""A BERT-style sentence encoder in Keras 3 (TensorFlow backend).

input_ids int32 [batch, seq] (0 = padding) → embedding float32 [batch, dim],
L2-normalised. Post-LN transformer layers, erf GELU, masked mean pooling:
the architecture of all-MiniLM-L6-v2, so its weights load unchanged.

The attention mask is computed from `input_ids != 0` inside the model, so the
served model has exactly one input. GELU is written with `erf` because Keras'
exact gelu lowers to the TF op Erfc, which tf2onnx cannot convert.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import keras
import tensorflow as tf

from kbrec.tokenization import PAD_ID

# Added to attention logits at padded keys; large enough that exp() underflows to 0.
MASK_BIAS = -1e9


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1
    # Longest input the served model accepts; tokenizers truncate to it.
    max_length: int = 256

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        if self.max_length > self.max_position:
            raise ValueError("max_length cannot exceed max_position")

    @property
    def dim(self) -> int:
        return self.hidden_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MINILM_L6 = EncoderConfig()


def gelu_erf(x: tf.Tensor) -> tf.Tensor:
    return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))


class TransformerLayer(keras.layers.Layer):
    """One post-LN encoder layer: self-attention and a GELU feed-forward block."""

    def __init__(self, config: EncoderConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        hidden = config.hidden_size
        self.num_heads = config.num_heads
        self.head_size = hidden // config.num_heads
        self.query = keras.layers.Dense(hidden, name="query")
        self.key = keras.layers.Dense(hidden, name="key")
        self.value = keras.layers.Dense(hidden, name="value")
        self.attention_output = keras.layers.Dense(hidden, name="attention_output")
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, name="attention_norm"
        )
        self.intermediate = keras.layers.Dense(config.intermediate_size, name="intermediate")
        self.output_dense = keras.layers.Dense(hidden, name="output_dense")
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, name="output_norm"
        )
        self.dropout = keras.layers.Dropout(config.dropout)

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        batch, seq = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [batch, seq, self.num_heads, self.head_size])
        return tf.transpose(x, [0, 2, 1, 3])  # [batch, heads, seq, head_size]

    def call(self, hidden: tf.Tensor, mask_bias: tf.Tensor, training: bool = False) -> tf.Tensor:
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        scores = tf.matmul(q, k, transpose_b=True) / math.sqrt(self.head_size)
        probs = tf.nn.softmax(scores + mask_bias, axis=-1)
        probs = self.dropout(probs, training=training)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])
        context = tf.reshape(context, tf.shape(hidden))
        attended = self.dropout(self.attention_output(context), training=training)
        hidden = self.attention_norm(hidden + attended)
        ffn = self.output_dense(gelu_erf(self.intermediate(hidden)))
        ffn = self.dropout(ffn, training=training)
        return self.output_norm(hidden + ffn)


class TextEncoder(keras.Model):
    """Token ids → L2-normalised sentence embeddings (masked mean pooling)."""

    def __init__(self, config: EncoderConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.word_embeddings = keras.layers.Embedding(
            config.vocab_size, config.hidden_size, name="word_embeddings"
        )
        self.position_embeddings = keras.layers.Embedding(
            config.max_position, config.hidden_size, name="position_embeddings"
        )
        self.type_embeddings = keras.layers.Embedding(
            config.type_vocab_size, config.hidden_size, name="type_embeddings"
        )
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=config.layer_norm_eps, name="embedding_norm"
        )
        self.embedding_dropout = keras.layers.Dropout(config.dropout)
        self.encoder_layers = [
            TransformerLayer(config, name=f"layer_{i}") for i in range(config.num_layers)
        ]

    def call(self, input_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        input_ids = tf.cast(input_ids, tf.int32)
        mask = tf.cast(tf.not_equal(input_ids, PAD_ID), tf.float32)  # [batch, seq]
        positions = tf.range(tf.shape(input_ids)[1])
        # Every token has type 0 (single-segment input), so the type embedding is one row.
        hidden = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[tf.newaxis]
            + self.type_embeddings(tf.zeros_like(positions))[tf.newaxis]
        )
        hidden = self.embedding_dropout(self.embedding_norm(hidden), training=training)
        mask_bias = (1.0 - mask)[:, tf.newaxis, tf.newaxis, :] * MASK_BIAS
        for layer in self.encoder_layers:
            hidden = layer(hidden, mask_bias, training=training)
        summed = tf.reduce_sum(hidden * mask[:, :, tf.newaxis], axis=1)
        counts = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1e-9)
        return tf.math.l2_normalize(summed / counts, axis=-1, epsilon=1e-12)


def build_encoder(config: EncoderConfig, seed: int | None = None) -> TextEncoder:
    """A randomly initialised encoder with its weights created."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = TextEncoder(config, name="text_encoder")
    model(tf.ones((1, 2), dtype=tf.int32))
    return model
