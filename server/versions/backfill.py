"""Backfill: give every stored article a vector of one model version, store and index.

Used twice: to build the active version's index on start (full speed, before the
service is ready), and to re-embed all articles with a candidate version in the
background while the active one serves (paced, lowest priority).

Resumable by construction: the work list is "articles without a vector of this
version" in the store, so a restart continues where the last commit left off.
Safe against concurrent writes: a vector is stored only if its article is still
at the revision that was embedded, and store write plus index update happen
under the commit lock of `LiveVersions`, in the order writers commit.

Pacing (`BackfillPacing`): articles are embedded in steps of at most
`step_tokens` padded tokens (so a query waits behind at most one short step),
and after each step the backfill sleeps so that it keeps the backend busy for at
most `share` of the wall time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from kbrec.records import article_text
from server.inference.serving_model import ServingModel
from server.storage.store import StoredArticle
from server.versions.live_set import LiveVersions
from server.versions.progress import BackfillProgress

log = logging.getLogger(__name__)

# Articles tokenized, embedded and committed together.
COMMIT_CHUNK = 64


@dataclass(frozen=True)
class BackfillPacing:
    share: float = 1.0  # most of the wall time spent embedding (1.0: no pause)
    step_tokens: int = 256  # most padded tokens per backend call (a query waits <= one)

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"backfill_share must be in (0, 1], got {self.share}")
        if self.step_tokens <= 0:
            raise ValueError(f"backfill_step_tokens must be > 0, got {self.step_tokens}")

    def pause_after(self, busy_s: float) -> float:
        return busy_s * (1 / self.share - 1)


def token_steps(lengths: Sequence[int], step_tokens: int) -> Iterator[list[int]]:
    """Row indices, shortest first, in groups whose padded size fits `step_tokens`
    (a row longer than that goes alone)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    step: list[int] = []
    for index in order:
        # Sorted ascending, so this row is the longest of the step: it sets the padding.
        if step and lengths[index] * (len(step) + 1) > step_tokens:
            yield step
            step = []
        step.append(index)
    if step:
        yield step


async def backfill(
    live: LiveVersions,
    model: ServingModel,
    pacing: BackfillPacing,
    progress: BackfillProgress,
    *,
    background: bool = True,
) -> None:
    """Embed, store and index every article lacking a vector of `model`'s version.

    `background`: as background work beside live queries (else on the serving path,
    at full speed: for the index build before the service is ready). Returns when a
    fresh count finds none missing; errors propagate (the caller retries: what was
    committed stays done).
    """
    while True:
        missing = await live.articles_missing(model)
        progress.remaining = len(missing)
        if not missing:
            return
        log.info("version %d: %d articles to embed", model.number, len(missing))
        for start in range(0, len(missing), COMMIT_CHUNK):
            chunk = missing[start : start + COMMIT_CHUNK]
            if background:
                vectors = await embed_paced(model, chunk, pacing)
            else:
                vectors = await model.embed_articles([s.article for s in chunk], bulk=True)
            await live.commit_vectors(model, chunk, vectors)
            progress.embedded += len(chunk)
            progress.remaining = max(progress.remaining - len(chunk), 0)


async def embed_paced(
    model: ServingModel, chunk: Sequence[StoredArticle], pacing: BackfillPacing
) -> np.ndarray:
    """float32 [len(chunk), dim], in order, embedded in paced low-priority steps."""
    token_ids = await model.tokenizer.encode([article_text(s.article) for s in chunk])
    vectors = np.empty((len(chunk), model.index.dim), dtype=np.float32)
    for step in token_steps([len(row) for row in token_ids], pacing.step_tokens):
        started = time.monotonic()
        vectors[step] = await model.batcher.embed_background([token_ids[i] for i in step])
        pause = pacing.pause_after(time.monotonic() - started)
        if pause > 0:
            await asyncio.sleep(pause)
    return vectors
