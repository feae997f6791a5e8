"""Stage profiles: py-spy's collapsed stacks, the innermost named frame, CPU by thread."""

from __future__ import annotations

import os
import re

import pytest

from loadtest.proc_stats import thread_cpu_s
from loadtest.stack_profile import (
    NATIVE,
    OTHER,
    Sampled,
    Stack,
    attribute,
    parse_collapsed,
    stage_of,
)

RULES = (
    ("tokenize", re.compile(r"\(tokenizers/|^Tokenizer\.")),
    ("http", re.compile(r"\(uvicorn/")),
    ("loop", re.compile(r"\(asyncio/")),
)
RAW = """\
thread (100): MainThread;run (asyncio/runners.py:118);data_received (uvicorn/protocols/h.py:174) 6
thread (100): MainThread;run (asyncio/runners.py:118) 2
thread (100): MainThread 2
thread (200): tokenize_0;_worker (concurrent/futures/thread.py:83);Tokenizer.encode (k.py:48) 3
thread (200): tokenize_0;_worker (concurrent/futures/thread.py:81) 1

"""


def test_collapsed_lines_give_thread_frames_and_counts() -> None:
    stacks = parse_collapsed(RAW.splitlines())
    assert len(stacks) == 5
    assert stacks[0] == Stack(
        100,
        (
            "run (asyncio/runners.py:118)",
            "data_received (uvicorn/protocols/h.py:174)",
        ),
        6,
        "MainThread",
    )
    assert stacks[2] == Stack(100, (), 2, "MainThread")  # sampled outside any Python frame
    assert stacks[3].thread == 200 and stacks[3].samples == 3
    assert parse_collapsed(["main (app.py:3);work (app.py:9) 4"]) == [
        Stack(None, ("main (app.py:3)", "work (app.py:9)"), 4)
    ]


def test_the_innermost_named_frame_decides() -> None:
    # uvicorn calls into the loop's code and vice versa: the deepest named frame wins,
    # and an unnamed library (concurrent/futures here) counts for its caller.
    assert stage_of(["run (asyncio/runners.py:1)", "recv (uvicorn/x.py:2)"], RULES) == "http"
    assert stage_of(["recv (uvicorn/x.py:2)", "later (asyncio/events.py:3)"], RULES) == "loop"
    assert stage_of(["Tokenizer.encode (k.py:1)", "submit (concurrent/futures/t.py:5)"], RULES) == (
        "tokenize"
    )
    assert stage_of(["_worker (concurrent/futures/thread.py:81)"], RULES) == OTHER
    assert stage_of([], RULES) == OTHER


def test_each_thread_cpu_is_split_by_its_own_samples() -> None:
    # Thread 100 has 10 samples and 0.5 CPU s; thread 200 has 4 samples but 2.0 CPU s:
    # samples only split a thread's time, its CPU seconds weigh it. Thread 300 was never
    # sampled (a native pool thread): its CPU is reported as such.
    stacks = parse_collapsed(RAW.splitlines())
    profile = attribute(stacks, {100: 0.5, 200: 2.0, 300: 0.5, 400: 0.0}, RULES)
    assert profile.cpu_s["http"] == pytest.approx(0.5 * 6 / 10)
    assert profile.cpu_s["loop"] == pytest.approx(0.5 * 2 / 10)
    assert profile.cpu_s[OTHER] == pytest.approx(0.5 * 2 / 10 + 2.0 * 1 / 4)
    assert profile.cpu_s["tokenize"] == pytest.approx(2.0 * 3 / 4)
    assert profile.cpu_s[NATIVE] == pytest.approx(0.5)
    assert profile.native_threads == 1
    assert profile.total_cpu_s == pytest.approx(3.0)
    assert profile.share("tokenize") == pytest.approx(0.5)
    assert profile.samples == {"http": 6, "loop": 2, OTHER: 3, "tokenize": 3}


def test_cpu_by_thread_name_sums_threads_of_a_name_and_counts_unseen_ones_as_native() -> None:
    stacks = [
        *parse_collapsed(RAW.splitlines()),
        *parse_collapsed(["thread (201): tokenize_0;_worker (concurrent/futures/thread.py:81) 1"]),
    ]
    sampled = Sampled(stacks, {100: 0.5, 200: 2.0, 201: 0.25, 300: 0.75}, 1.0, "")
    assert sampled.cpu_by_thread_name() == {"tokenize_0": 2.25, NATIVE: 0.75, "MainThread": 0.5}
    assert list(sampled.cpu_by_thread_name()) == ["tokenize_0", NATIVE, "MainThread"]


def test_samples_of_a_thread_without_cpu_reading_are_left_out_and_counted() -> None:
    profile = attribute(parse_collapsed(RAW.splitlines()), {100: 1.0}, RULES)
    assert profile.unweighted_samples == 4
    assert profile.total_cpu_s == pytest.approx(1.0)


def test_thread_cpu_reads_every_thread_of_a_process() -> None:
    seconds = thread_cpu_s(os.getpid())
    assert os.getpid() in seconds  # the main thread's id is the process id
    assert all(s >= 0 for s in seconds.values())
