"""The two ways of generating load: an open loop (arrival schedule) and a closed loop.

Open loop: requests are due at schedule times whatever the server does. Latency
counts from the due time, so a server (or generator) stall delays every request due
during it and shows in the percentiles. A due request is dropped, and counted, when
the target's in-flight cap is reached or when the generator has fallen further
behind its schedule than `max_lag_s` (sending a burst of stale requests would then
measure the backlog, not the server).

Closed loop: `concurrency` requests in flight, each followed by the next as soon as it
returns (perf_analyzer's concurrency mode). A stall here shows as fewer requests, not
as latency: the loop waits with the server, which is coordinated omission by design.
A refusal with Retry-After (429/503) is followed by the next request only once that
wait is over, as a well-behaved client does; `honour_retry_after=False` sends at once,
as a client that ignores it does (each refusal then costs the server a whole HTTP
request again at once, which on a saturated server can take the CPU its answers need).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from functools import partial

from loadtest.recorder import Recorder
from loadtest.schedule import arrival_offsets
from loadtest.target import DROP_BEHIND_SCHEDULE, DROP_IN_FLIGHT_CAP, Target

REQUEST_CAP = "request cap"


class Stopper:
    """Why the run must end early (interrupt, duration or request cap), set once."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._event = asyncio.Event()

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self._event.set()

    async def wait_until(self, when: float) -> bool:
        """Sleep until loop time `when`; True at once if the run is (or gets) stopped."""
        if self.reason is not None:
            return True
        try:
            async with asyncio.timeout_at(when):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Budget:
    """The run's request cap, shared by all its steps."""

    def __init__(self, max_requests: int, stopper: Stopper) -> None:
        self.left = max_requests
        self._stopper = stopper

    def take(self) -> bool:
        if self.left <= 0:
            self._stopper.stop(REQUEST_CAP)
            return False
        self.left -= 1
        return True


class _Driver:
    def __init__(
        self,
        target: Target,
        picks: Iterator[int],
        ops: Sequence[str],
        recorder: Recorder,
        budget: Budget,
    ) -> None:
        self.target = target
        self.picks = picks
        self.ops = ops
        self.recorder = recorder
        self.budget = budget
        self.running = False
        self.loop = asyncio.get_running_loop()

    def stop(self) -> None:
        self.running = False


class OpenLoop(_Driver):
    def __init__(
        self,
        target: Target,
        picks: Iterator[int],
        ops: Sequence[str],
        recorder: Recorder,
        budget: Budget,
        *,
        rate: float,
        poisson: bool,
        seed: int,
        max_lag_s: float,
    ) -> None:
        super().__init__(target, picks, ops, recorder, budget)
        self.mode, self.load = "open", rate
        self.offsets = arrival_offsets(rate, poisson, seed)
        self.max_lag_s = max_lag_s
        self.origin = 0.0
        self.next_due = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.running = True
        self.origin = self.loop.time()
        self.next_due = self.origin + next(self.offsets)
        self._tick()

    def stop(self) -> None:
        super().stop()
        if self._timer is not None:
            self._timer.cancel()

    def _tick(self) -> None:
        """Send everything due, then sleep until the next due time (a timer, not a task)."""
        now = self.loop.time()
        while self.running and self.next_due <= now:
            due = self.next_due
            self.next_due = self.origin + next(self.offsets)
            if now - due > self.max_lag_s:
                self.recorder.on_dropped(DROP_BEHIND_SCHEDULE)
            elif not self.budget.take():
                self.stop()
            elif self.target.submit(next(self.picks), partial(self._done, due)):
                self.recorder.on_sent()
            else:
                self.recorder.on_dropped(DROP_IN_FLIGHT_CAP)
        if self.running:
            self._timer = self.loop.call_at(self.next_due, self._tick)

    def _done(
        self, due: float, item: int, finished: float, error: str | None, _retry_after_s: float
    ) -> None:
        # Arrivals do not depend on answers: an open loop has no next request to delay.
        self.recorder.on_done(self.ops[item], finished - due, error)


class ClosedLoop(_Driver):
    def __init__(
        self,
        target: Target,
        picks: Iterator[int],
        ops: Sequence[str],
        recorder: Recorder,
        budget: Budget,
        *,
        concurrency: int,
        honour_retry_after: bool = True,
    ) -> None:
        super().__init__(target, picks, ops, recorder, budget)
        self.mode, self.load = "closed", float(concurrency)
        self.concurrency = concurrency
        self.honour_retry_after = honour_retry_after
        self._waiting: set[asyncio.TimerHandle] = set()  # clients sitting out a Retry-After

    def stop(self) -> None:
        super().stop()
        for handle in self._waiting:
            handle.cancel()
        self._waiting.clear()

    def start(self) -> None:
        self.running = True
        for _ in range(self.concurrency):
            self._send()

    def _send(self) -> None:
        if not self.running:
            return
        if not self.budget.take():
            self.stop()
            return
        if self.target.submit(next(self.picks), partial(self._done, self.loop.time())):
            self.recorder.on_sent()
        else:  # only if the in-flight cap is below the concurrency
            self.recorder.on_dropped(DROP_IN_FLIGHT_CAP)

    def _done(
        self, started: float, item: int, finished: float, error: str | None, retry_after_s: float
    ) -> None:
        self.recorder.on_done(self.ops[item], finished - started, error)
        if retry_after_s > 0 and self.honour_retry_after and self.running:
            self._send_after(retry_after_s)
        else:
            self._send()

    def _send_after(self, seconds: float) -> None:
        def resume() -> None:
            self._waiting.discard(handle)
            self._send()

        handle = self.loop.call_later(seconds, resume)
        self._waiting.add(handle)


Driver = OpenLoop | ClosedLoop
