"""CPU seconds and memory of processes and of the whole machine, read from Linux /proc.

A benchmark on a shared, small machine has to say what its numbers cost and what
else ran meanwhile: the server's CPU per request, the generator's, and the cores
busy with neither (neighbours' noise). These are cumulative counters; a benchmark
reads them before and after a load level and reports the difference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_MEMORY_LINE: Final = re.compile(r"^(VmRSS|VmHWM):\s+(\d+) kB$", re.MULTILINE)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads."""
    return stat_cpu_s(Path(f"/proc/{pid}/stat"))


def tree_cpu_s(pid: int) -> float:
    """`process_cpu_s` of a process and all its live descendants (a server's workers)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += process_cpu_s(member)
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
    return total


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants, parents first."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except FileNotFoundError:
                continue
    return found


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each live thread of a process, by OS thread id.

    A sampling profiler cannot tell a thread that runs from one that waits for the core;
    these can. A thread that exits between two readings is missing from the second.
    """
    seconds: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            seconds[int(task.name)] = stat_cpu_s(task / "stat")
        except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
            continue
    return seconds


def stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc .../stat file (a process or one thread)."""
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_busy_cpu_s() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    # guest time is already inside user time: the first eight fields only
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """{"VmRSS": resident now, "VmHWM": peak resident} of a process, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(value) for key, value in _MEMORY_LINE.findall(status)}
