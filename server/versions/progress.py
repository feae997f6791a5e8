"""What /v1/models and the metrics show of a running backfill."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class BackfillProgress:
    version: int
    remaining: int = 0  # articles still lacking a vector (as of the last count)
    embedded: int = 0  # articles embedded by this backfill so far
    started_at: float = field(default_factory=time.monotonic)
    last_error: str | None = None

    def articles_per_s(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.embedded / elapsed if elapsed > 0 else 0.0
