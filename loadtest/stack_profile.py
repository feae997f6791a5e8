"""Where a server process's CPU goes, stage by stage: py-spy's stacks weighted by /proc.

py-spy samples every Python thread of a running process from outside (no change to the
server, no restart) and writes collapsed stacks. A stack belongs to the stage of its
innermost frame that a rule names (a benchmark's table of (stage, pattern) pairs): the
code a thread is in decides, whatever called it, and a library no rule names counts
for its caller.

A sampler counts a thread as busy whenever the OS has it runnable, also while it waits
for the core, which on a server pinned to one core with several busy threads is much
of the time. So the samples only split each thread's time among stages; the weights
are each thread's own CPU seconds from /proc/PID/task over the sampled span. Threads
py-spy cannot see (native pools, e.g. ONNX Runtime's intra-op threads or the
tokenizers' rayon threads) keep their CPU in a row of their own, `NATIVE`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.proc_stats import thread_cpu_s

OTHER: Final = "other"
NATIVE: Final = "threads py-spy cannot see (native)"
DEFAULT_RATE: Final = 200  # samples per second and thread
# (stage, pattern searched in a frame "function (path:line)"); the first rule that
# matches a frame names its stage.
StageRules = Sequence[tuple[str, re.Pattern[str]]]
_THREAD: Final = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)(?::\s*(.*))?$")
_SUMMARY: Final = re.compile(r"Samples: \d+ Errors: \d+")


class ProfileError(RuntimeError):
    """py-spy is missing, could not attach, or recorded nothing; the message says why."""


@dataclass(frozen=True)
class Stack:
    thread: int | None  # OS thread id (py-spy --threads on Linux); None without one
    frames: tuple[str, ...]  # "function (path:line)", outermost first
    samples: int
    thread_name: str | None = None  # Python's name of the thread ("MainThread", "ort-v1_0")


def parse_collapsed(lines: Iterable[str]) -> list[Stack]:
    """py-spy's `--format raw` lines: `thread (TID): NAME;frame;…;frame COUNT`."""
    stacks = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        body, _, count = line.rpartition(" ")
        frames = body.split(";")
        thread, name = None, None
        if (match := _THREAD.match(frames[0])) is not None:
            thread, name = int(match.group(1), 0), match.group(2) or None
            frames = frames[1:]
        stacks.append(Stack(thread, tuple(f for f in frames if f), int(count), name))
    return stacks


def stage_of(frames: Sequence[str], rules: StageRules) -> str:
    """The stage of the innermost frame some rule matches; OTHER if none does."""
    for frame in reversed(frames):
        for stage, pattern in rules:
            if pattern.search(frame):
                return stage
    return OTHER


@dataclass(frozen=True)
class StageProfile:
    cpu_s: dict[str, float]  # stage → CPU seconds over the span, NATIVE included
    samples: dict[str, int]  # stage → samples (what py-spy saw, unweighted)
    unweighted_samples: int  # samples of threads /proc had no reading for (left out)
    native_threads: int  # threads with CPU but no sample (their CPU is under NATIVE)

    @property
    def total_cpu_s(self) -> float:
        return sum(self.cpu_s.values())

    def share(self, stage: str) -> float:
        return self.cpu_s.get(stage, 0.0) / self.total_cpu_s if self.total_cpu_s else 0.0


def attribute(
    stacks: Iterable[Stack], thread_cpu: Mapping[int, float], rules: StageRules
) -> StageProfile:
    """Each thread's CPU seconds split among stages in proportion to its samples."""
    by_thread: defaultdict[int | None, Counter[str]] = defaultdict(Counter)
    for stack in stacks:
        by_thread[stack.thread][stage_of(stack.frames, rules)] += stack.samples
    cpu: defaultdict[str, float] = defaultdict(float)
    samples: Counter[str] = Counter()
    native = 0
    for thread, seconds in thread_cpu.items():
        counts = by_thread.get(thread)
        if not counts:
            cpu[NATIVE] += seconds
            native += 1 if seconds > 0 else 0
            continue
        total = sum(counts.values())
        for stage, n in counts.items():
            cpu[stage] += seconds * n / total
        samples.update(counts)
    unweighted = sum(sum(c.values()) for t, c in by_thread.items() if t not in thread_cpu)
    return StageProfile(dict(cpu), dict(samples), unweighted, native)


def py_spy_executable() -> str | None:
    """py-spy from PATH, else next to this interpreter (a virtualenv's bin/)."""
    beside = Path(sys.executable).with_name("py-spy")
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


@dataclass(frozen=True)
class Sampled:
    stacks: list[Stack]
    thread_cpu_s: dict[int, float]  # CPU seconds of each thread over the span
    span_s: float
    summary: str  # py-spy's own count: "Samples: N Errors: M"

    def profile(self, rules: StageRules) -> StageProfile:
        return attribute(self.stacks, self.thread_cpu_s, rules)

    def cpu_by_thread_name(self) -> dict[str, float]:
        """CPU seconds per thread name (threads of one name summed; threads py-spy never
        saw in Python code under NATIVE), busiest first."""
        names = {s.thread: s.thread_name for s in self.stacks if s.thread_name is not None}
        cpu: defaultdict[str, float] = defaultdict(float)
        for thread, seconds in self.thread_cpu_s.items():
            cpu[names.get(thread, NATIVE)] += seconds
        return dict(sorted(cpu.items(), key=lambda item: -item[1]))


class PySpySampler:
    """py-spy recording process `pid` for `duration_s`, from `delay_s` after `start()`.

    It runs in a thread, so it can sample the measurement window of a load level while
    the level blocks the caller. `--nonblocking` reads the process without pausing it
    (a paused server would serve less than the level measures); stacks may then be
    slightly torn, which a stage total does not notice.
    """

    def __init__(
        self,
        pid: int,
        delay_s: float,
        duration_s: float,
        rate: int = DEFAULT_RATE,
        executable: str | None = None,
    ) -> None:
        found = executable or py_spy_executable()
        if found is None:
            raise ProfileError("py-spy not found: `pip install py-spy` (or run without profile)")
        self.executable = found
        self.pid = pid
        self.delay_s = delay_s
        self.seconds = max(1, round(duration_s))  # py-spy takes whole seconds
        self.rate = rate
        self._result: Sampled | ProfileError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def result(self) -> Sampled:
        self._thread.join()
        if isinstance(self._result, ProfileError):
            raise self._result
        assert self._result is not None
        return self._result

    def _run(self) -> None:
        try:
            self._result = self._record()
        except ProfileError as exc:
            self._result = exc
        except (OSError, subprocess.SubprocessError) as exc:
            self._result = ProfileError(f"py-spy failed: {exc}")

    def _record(self) -> Sampled:
        time.sleep(self.delay_s)
        with tempfile.TemporaryDirectory(prefix="py-spy-") as tmp:
            output = Path(tmp) / "stacks.txt"
            command = [
                self.executable,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                "raw",
                "--output",
                str(output),
                "--rate",
                str(self.rate),
                "--duration",
                str(self.seconds),
                "--threads",  # per thread, to weight by each one's CPU
                "--nonblocking",
            ]
            before, started = thread_cpu_s(self.pid), time.perf_counter()
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=self.seconds + 60
            )
            span = time.perf_counter() - started
            after = thread_cpu_s(self.pid)
            said = (done.stdout + done.stderr).strip()
            if done.returncode != 0 or not output.is_file():
                raise ProfileError(f"py-spy exited {done.returncode}: {said[-2000:]}")
            stacks = parse_collapsed(output.read_text().splitlines())
        if not stacks:
            raise ProfileError(f"py-spy recorded no stack: {said[-2000:]}")
        spent = {tid: seconds - before.get(tid, 0.0) for tid, seconds in after.items()}
        summary = _SUMMARY.search(said)
        return Sampled(stacks, spent, span, summary.group(0) if summary else "")
