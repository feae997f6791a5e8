"""The kbrec target against a real `kbrec serve`: recommendations and article PUTs mixed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from serving_helpers import REPO_ROOT, ServeProcess

from loadtest.workload import WRITE_ID_PREFIX, WRITE_SLOTS


def test_recommendations_mixed_with_writes(
    tiny_model_repository: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    db = tmp_path / "kbrec.sqlite"
    kbrec = [sys.executable, "-m", "cli.main"]
    subprocess.run([*kbrec, "store", "import", "--corpus", str(tiny_corpus), "--db", str(db)],
                   cwd=REPO_ROOT, check=True, capture_output=True)  # fmt: skip
    with ServeProcess("--repository", str(tiny_model_repository), "--db", str(db)) as server:
        args = ["loadtest", "--url", server.url, "--mode", "closed", "--concurrency", "2"]
        args += ["--duration", "3", "--warmup-s", "0.5", "--workload", f"corpus:{tiny_corpus}"]
        args += ["--write-fraction", "0.2", "--out", str(tmp_path / "out")]
        done = subprocess.run([*kbrec, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        step = summary["steps"][0]
        assert step["errors"] == {} and step["ok"] > 10
        assert step["by_op"]["recommend"]["count"] > 0 and step["by_op"]["write"]["count"] > 0
        # The writes landed under the load-test ids only, at most WRITE_SLOTS per account.
        with sqlite3.connect(db) as connection:
            written = connection.execute(
                "SELECT account_id, count(*) FROM articles WHERE article_id LIKE ? "
                "GROUP BY account_id",
                (f"{WRITE_ID_PREFIX}%",),
            ).fetchall()
    assert written and all(0 < count <= WRITE_SLOTS for _, count in written)
