"""A version's ranking index in ONE array on the array module's device (a GPU with CuPy).

Every article vector of the version is a row of `vectors` (float32 or float16); an
account's articles are one segment of rows, `[start, start + length)`, with spare room up
to `start + capacity`, so a batch of queries is ranked by gathering the segments it
needs in a fixed number of array calls (server.inference.device_ranking). The host keeps
what a ranking returns and its tie-break needs: each row's entry and the rank of its
article_id among its account's ids (sorted again, once per account that changed, before
the next batch is ranked).

Writes never upload the array again:
- a new article is appended in its segment's spare room; a full segment moves to the
  end of the array with twice the room (a copy on the device);
- an update overwrites its row; a delete moves the segment's last row into the hole
  (one row copied on the device), so segments stay dense;
- rows left behind by moved segments and emptied accounts are dead (tombstones); when
  the array is full and at least half of it is dead, it is compacted in place (one
  gather and scatter on the device, amortised like the growth), else it doubles.
Vectors written since the last ranking wait on the host and go up in one copy when the
next batch is ranked (or every `FLUSH_ROWS`), so a bulk load is a few large copies.

Like `VersionIndex`, it holds one model version and is used from the event loop only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import numpy as np

from server.inference.array_modules import NUMPY, RANKING_DTYPES, ArrayModule
from server.inference.index import IndexEntry

MIN_SEGMENT: Final = 8
MIN_ROWS: Final = 1024
FLUSH_ROWS: Final = 1 << 14


class Segment:
    """One account's rows: positions 0..length-1 are `start + position` in the array."""

    __slots__ = ("capacity", "length", "pending", "row_of", "start")

    def __init__(self, start: int, capacity: int) -> None:
        self.start = start
        self.capacity = capacity
        self.length = 0
        self.row_of: dict[str, int] = {}  # article_id → position
        # position → (float32 vector, locale code), written since the last upload
        self.pending: dict[int, tuple[np.ndarray, int]] = {}

    def __len__(self) -> int:
        return self.length

    def __contains__(self, article_id: str) -> bool:
        return article_id in self.row_of


def compacted_capacity(length: int) -> int:
    """Room a segment keeps after compaction: a quarter more, so appends rarely move it."""
    return max(MIN_SEGMENT, length + max(1, length // 4))


def packed_layout(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, capacities) of segments of `lengths` rows packed from row 0 in order, each
    with the room a compaction gives it; an empty one takes no room."""
    capacities = np.array([compacted_capacity(int(n)) if n else 0 for n in lengths], dtype=np.int64)
    return np.cumsum(capacities) - capacities, capacities


def segment_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The rows of segments' first `lengths` positions, segment by segment: position j
    of segment i is row starts[i] + j."""
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offsets


class DeviceIndex:
    """`ArticleIndex` of one model version in one device array (see the module)."""

    def __init__(
        self,
        model_version: int,
        dim: int,
        arrays: ArrayModule = NUMPY,
        dtype: str = "float32",
        min_rows: int = MIN_ROWS,
    ) -> None:
        if dtype not in RANKING_DTYPES:
            raise ValueError(f"ranking dtype must be one of {RANKING_DTYPES}, got {dtype!r}")
        self.model_version = model_version
        self.dim = dim
        self.arrays = arrays
        self.dtype = np.dtype(dtype)
        xp = arrays.xp
        self._rows = max(min_rows, MIN_SEGMENT)
        self._vectors = xp.zeros((self._rows, dim), dtype=self.dtype)
        self._codes = xp.zeros(self._rows, dtype=np.int32)
        self._entry_at: list[IndexEntry | None] = [None] * self._rows
        self._id_rank = np.zeros(self._rows, dtype=np.int64)
        self._segments: dict[str, Segment] = {}
        self._end = 0  # rows below it belong to a segment or are dead
        self._live_capacity = 0  # rows that belong to a segment
        self._locale_code_of: dict[str | None, int] = {}
        self._dirty: set[Segment] = set()
        self._pending_rows = 0
        # Segments whose id ranks are out of date: ranked again, in one sort, before the
        # next batch (a write costs no O(account) work of its own).
        self._unranked: set[Segment] = set()

    # --- ArticleIndex -------------------------------------------------------------

    def account(self, account_id: str) -> Segment | None:
        return self._segments.get(account_id)

    def upsert(self, account_id: str, entry: IndexEntry, vector: np.ndarray) -> None:
        vector = np.array(vector, dtype=np.float32)  # a copy: it waits for the upload
        if vector.shape != (self.dim,):
            raise ValueError(f"vector shape {vector.shape}, expected ({self.dim},)")
        segment = self._segments.get(account_id)
        if segment is None:
            segment = Segment(self._reserve(MIN_SEGMENT), MIN_SEGMENT)
            self._live_capacity += MIN_SEGMENT
            self._segments[account_id] = segment
        position = segment.row_of.get(entry.article_id)
        if position is None:
            if segment.length == segment.capacity:
                self._make_room(segment)
            position = self._append(segment, entry.article_id)
        self._entry_at[segment.start + position] = entry
        self._stage(segment, position, vector, self._locale_code(entry.locale))

    def remove(self, account_id: str, article_id: str) -> bool:
        segment = self._segments.get(account_id)
        if segment is None:
            return False
        position = segment.row_of.pop(article_id, None)
        if position is None:
            return False
        start, last = segment.start, segment.length - 1
        if position != last:
            moved = self._entry_at[start + last]
            assert moved is not None
            self._entry_at[start + position] = moved
            segment.row_of[moved.article_id] = position
            self._move_row(segment, last, position)
        else:
            self._drop_pending(segment, position)
        self._entry_at[start + last] = None
        segment.length -= 1
        self._unranked.add(segment)
        if segment.length == 0:
            # An account exists while it has articles (the same rule after a restart).
            del self._segments[account_id]
            self._dirty.discard(segment)
            self._unranked.discard(segment)
            self._live_capacity -= segment.capacity
        return True

    def clear(self) -> None:
        """Forget every account (before a reload from the store); the arrays are kept."""
        self._segments.clear()
        self._dirty.clear()
        self._unranked.clear()
        self._pending_rows = 0
        self._end = self._live_capacity = 0
        self._entry_at = [None] * self._rows

    def article_counts(self) -> Iterator[tuple[str, int]]:
        for account_id, segment in self._segments.items():
            yield account_id, segment.length

    def __len__(self) -> int:
        """Number of accounts."""
        return len(self._segments)

    def load_accounts(
        self, accounts: Sequence[tuple[str, Sequence[IndexEntry]]], vectors: Any
    ) -> None:
        """Replace the whole index: the accounts' entries in order, their vectors the rows
        of `vectors` ([total, dim], host or device) in the same order. One upload and one
        scatter for all rows instead of an upsert each (a bulk load; the benchmark's 10M
        vectors). Each segment gets the room a compaction gives it and the array a quarter
        more for new accounts, so the writes that follow a load neither move every account
        they touch nor grow the whole array."""
        total = sum(len(entries) for _, entries in accounts)
        if tuple(vectors.shape) != (total, self.dim):
            raise ValueError(f"vectors of shape {vectors.shape}, expected ({total}, {self.dim})")
        self.clear()
        lengths = np.array([len(entries) for _, entries in accounts], dtype=np.int64)
        starts, capacities = packed_layout(lengths)
        room = int(capacities.sum())
        if room + room // 4 > self._rows:
            self._end = 0
            self._grow(room + room // 4)
        target = segment_rows(starts, lengths)
        xp = self.arrays.xp
        if isinstance(vectors, np.ndarray):
            vectors = vectors.astype(self.dtype, copy=False)  # cast before the upload
        target_d = xp.asarray(target)
        self._vectors[target_d] = xp.asarray(vectors)
        codes = np.empty(total, dtype=np.int32)
        loaded = 0
        for (account_id, entries), begin, capacity in zip(
            accounts, starts.tolist(), capacities.tolist(), strict=True
        ):
            if account_id in self._segments:
                raise ValueError(f"account {account_id!r} is given twice")
            count = len(entries)
            segment = Segment(begin, capacity)
            ids = [entry.article_id for entry in entries]
            segment.row_of = dict(zip(ids, range(count), strict=True))
            if len(segment.row_of) != count:
                raise ValueError(f"account {account_id!r} has an article_id twice")
            segment.length = count
            self._rank_ids(begin, ids)
            self._entry_at[begin : begin + count] = entries
            codes[loaded : loaded + count] = [self._locale_code(e.locale) for e in entries]
            if count:
                self._segments[account_id] = segment
            loaded += count
        self._codes[target_d] = xp.asarray(codes)
        self._end = self._live_capacity = room

    # --- what the ranker reads ------------------------------------------------------

    @property
    def vectors(self) -> Any:
        """[rows, dim] on the device; rows outside every segment hold garbage."""
        return self._vectors

    @property
    def locale_codes(self) -> Any:
        """int32 [rows] on the device: each row's locale as `locale_code` numbers it."""
        return self._codes

    @property
    def id_ranks(self) -> np.ndarray:
        """int64 [rows] on the host: a row's article_id rank within its account (current
        after `flush`)."""
        return self._id_rank

    @property
    def row_entries(self) -> list[IndexEntry | None]:
        """Each row's entry (None outside the segments); not to be changed by the reader."""
        return self._entry_at

    def entry(self, row: int) -> IndexEntry:
        entry = self._entry_at[row]
        if entry is None:
            raise KeyError(f"row {row} holds no article")
        return entry

    def locale_code(self, locale: str | None) -> int | None:
        """The number rows of this locale carry, or None when no article has it."""
        return self._locale_code_of.get(locale)

    def flush(self) -> None:
        """Make the index current for ranking: upload the vectors written since the last
        upload, in one copy, and rank the ids of the accounts that changed."""
        for segment in self._unranked:
            rows = range(segment.start, segment.start + segment.length)
            self._rank_ids(segment.start, [self.entry(row).article_id for row in rows])
        self._unranked.clear()
        self._upload()

    def _upload(self) -> None:
        if not self._dirty:
            return
        rows: list[int] = []
        vectors: list[np.ndarray] = []
        codes: list[int] = []
        for segment in self._dirty:
            for position, (vector, code) in segment.pending.items():
                rows.append(segment.start + position)
                vectors.append(vector)
                codes.append(code)
            segment.pending.clear()
        self._dirty.clear()
        self._pending_rows = 0
        if not rows:  # written and deleted again before any upload
            return
        xp = self.arrays.xp
        where = xp.asarray(np.array(rows, dtype=np.int64))
        self._vectors[where] = xp.asarray(np.stack(vectors).astype(self.dtype))
        self._codes[where] = xp.asarray(np.array(codes, dtype=np.int32))

    def account_matrix(self, account_id: str) -> np.ndarray:
        """A host copy of the account's vectors, row i = `account_entries(...)[i]`."""
        segment = self._segments.get(account_id)
        if segment is None:
            return np.zeros((0, self.dim), dtype=self.dtype)
        self.flush()
        return self.arrays.to_host(self._vectors[segment.start : segment.start + segment.length])

    def account_entries(self, account_id: str) -> list[IndexEntry]:
        segment = self._segments.get(account_id)
        if segment is None:
            return []
        return [self.entry(segment.start + p) for p in range(segment.length)]

    @property
    def allocated_rows(self) -> int:
        return self._rows

    @property
    def dead_rows(self) -> int:
        return self._end - self._live_capacity

    # --- layout -------------------------------------------------------------------

    def _locale_code(self, locale: str | None) -> int:
        return self._locale_code_of.setdefault(locale, len(self._locale_code_of))

    def _append(self, segment: Segment, article_id: str) -> int:
        position = segment.length
        segment.row_of[article_id] = position
        segment.length += 1
        self._unranked.add(segment)
        return position

    def _rank_ids(self, start: int, ids: list[str]) -> None:
        """Rows from `start` get the rank of their id among `ids` (the tie-break)."""
        order = sorted(range(len(ids)), key=ids.__getitem__)
        self._id_rank[np.asarray(order, dtype=np.int64) + start] = np.arange(len(ids))

    def _stage(self, segment: Segment, position: int, vector: np.ndarray, code: int) -> None:
        if position not in segment.pending:
            self._pending_rows += 1
        segment.pending[position] = (vector, code)
        self._dirty.add(segment)
        if self._pending_rows >= FLUSH_ROWS:
            self._upload()

    def _drop_pending(self, segment: Segment, position: int) -> None:
        if segment.pending.pop(position, None) is not None:
            self._pending_rows -= 1

    def _move_row(self, segment: Segment, source: int, target: int) -> None:
        """Row `source` of the segment becomes row `target` (whose old content is gone)."""
        staged = segment.pending.pop(source, None)
        if staged is not None:
            self._pending_rows -= 1
            self._stage(segment, target, *staged)
            return
        self._drop_pending(segment, target)
        self._vectors[segment.start + target] = self._vectors[segment.start + source]
        self._codes[segment.start + target] = self._codes[segment.start + source]

    def _make_room(self, segment: Segment) -> None:
        """A full segment moves to the end of the array with twice the room."""
        capacity = segment.capacity * 2
        start = self._reserve(capacity)
        if segment.length < segment.capacity:  # the reservation compacted: room enough
            self._release(start, capacity)
            return
        self._copy_rows(segment.start, start, segment.length)
        self._live_capacity += capacity - segment.capacity
        segment.start, segment.capacity = start, capacity

    def _copy_rows(self, source: int, target: int, count: int) -> None:
        """Rows [source, source+count) to [target, ...): the regions never overlap."""
        self._vectors[target : target + count] = self._vectors[source : source + count]
        self._codes[target : target + count] = self._codes[source : source + count]
        self._id_rank[target : target + count] = self._id_rank[source : source + count]
        self._entry_at[target : target + count] = self._entry_at[source : source + count]
        self._entry_at[source : source + count] = [None] * count

    def _reserve(self, count: int) -> int:
        """`count` free rows at the end (compacting or growing first); their start."""
        if self._end + count > self._rows:
            if self.dead_rows >= self._rows // 2:
                self._compact()
            if self._end + count > self._rows:
                self._grow(max(2 * self._rows, self._end + count))
        start = self._end
        self._end += count
        return start

    def _release(self, start: int, count: int) -> None:
        if start + count == self._end:
            self._end = start

    def _grow(self, rows: int) -> None:
        xp = self.arrays.xp
        vectors = xp.zeros((rows, self.dim), dtype=self.dtype)
        vectors[: self._end] = self._vectors[: self._end]
        codes = xp.zeros(rows, dtype=np.int32)
        codes[: self._end] = self._codes[: self._end]
        self._vectors, self._codes = vectors, codes
        self._id_rank = np.concatenate([self._id_rank, np.zeros(rows - self._rows, dtype=np.int64)])
        self._entry_at.extend([None] * (rows - self._rows))
        self._rows = rows

    def _compact(self) -> None:
        """Segments packed from row 0 in their current order, each with fresh room."""
        segments = sorted(self._segments.values(), key=lambda segment: segment.start)
        lengths = np.array([s.length for s in segments], dtype=np.int64)  # none is empty
        new_starts, capacities = packed_layout(lengths)
        total = int(capacities.sum())
        if total > self._rows:
            self._grow(total)
        old_starts = np.array([s.start for s in segments], dtype=np.int64)
        source, target = segment_rows(old_starts, lengths), segment_rows(new_starts, lengths)
        xp = self.arrays.xp
        source_d, target_d = xp.asarray(source), xp.asarray(target)
        # The right side is gathered into a new array before the scatter: safe in place.
        self._vectors[target_d] = self._vectors[source_d]
        self._codes[target_d] = self._codes[source_d]
        id_rank = np.zeros(self._rows, dtype=np.int64)
        id_rank[target] = self._id_rank[source]
        entries: list[IndexEntry | None] = [None] * self._rows
        for segment, start, capacity in zip(
            segments, new_starts.tolist(), capacities.tolist(), strict=True
        ):
            entries[start : start + segment.length] = self._entry_at[
                segment.start : segment.start + segment.length
            ]
            segment.start, segment.capacity = start, capacity
        self._id_rank, self._entry_at = id_rank, entries
        self._end = self._live_capacity = total
