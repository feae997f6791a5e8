"""server/heap.py, in a fresh interpreter: settling changes the process's collector."""

from __future__ import annotations

import json
import subprocess
import sys

from server.heap import YOUNG_THRESHOLD

PROGRAM = """
import gc, json, weakref
from server.heap import settle_for_serving

before = gc.get_threshold()
frozen = settle_for_serving()
# A cycle made after settling is garbage the collector still finds.
class Node: pass
node = Node(); node.me = node; alive = weakref.ref(node); del node
gc.collect()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                  "cycle_collected": alive() is None}))
"""


def test_settling_freezes_startup_and_raises_only_the_young_threshold() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    report = json.loads(result.stdout)
    assert report["frozen"] > 1_000  # an interpreter with server.heap imported
    assert report["after"] == [YOUNG_THRESHOLD, *report["before"][1:]]
    assert report["before"][0] < YOUNG_THRESHOLD
    assert report["cycle_collected"]
