"""The packaging tests start `kbrec serve` with the server tests' helpers."""

from __future__ import annotations

import sys
from pathlib import Path

# pytest only puts tests/server on sys.path when it collects that folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
