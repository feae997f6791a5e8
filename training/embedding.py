"""Batch text embedding with a TF encoder, for evaluation.

Texts are sorted by token count and padded per batch to the longest member,
so short queries do not pay for long articles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from kbrec.tokenization import TextTokenizer, pad_batch

EmbedFn = Callable[[Sequence[str]], np.ndarray]


def make_embedder(
    model_fn: Callable[[tf.Tensor], tf.Tensor],
    tokenizer: TextTokenizer,
    batch_size: int = 32,
    max_length: int | None = None,
) -> EmbedFn:
    """`model_fn(input_ids) -> embeddings` wrapped as texts → float32 [n, dim].

    `max_length` truncates below the tokenizer's own limit (articles are cut
    shorter than queries may be).
    """
    compiled = tf.function(model_fn, reduce_retracing=True)

    def embed(texts: Sequence[str]) -> np.ndarray:
        ids = tokenizer.encode(texts, max_length)
        order = np.argsort([len(row) for row in ids], kind="stable")
        chunks: list[np.ndarray] = []
        for start in range(0, len(order), batch_size):
            batch = pad_batch([ids[i] for i in order[start : start + batch_size]])
            chunks.append(compiled(tf.constant(batch)).numpy())
        if not chunks:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.empty((len(ids), chunks[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(chunks)
        return out

    return embed
