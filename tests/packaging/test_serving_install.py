"""`pip install .` without extras is a serving install: a fresh virtualenv gets the base
dependencies only, and its `kbrec store import` and `kbrec serve` answer a recommendation
on the tiny converted encoder without TensorFlow installed, imported or mapped.

The source is copied first (pip builds in the tree it is given, writing build/ and
*.egg-info); pip downloads from the package index, or its cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from serving_helpers import REPO_ROOT, ServeProcess

from kbrec.records import ARTICLES_FILE, read_articles

pytestmark = pytest.mark.slow

# Distributions of the `train` extra: none of them may come with the base install.
TRAINING_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx")
INSTALL_DEADLINE_S = 900.0
COMMAND_DEADLINE_S = 120.0
# Not part of the source: virtualenvs, data, generated versions, build output, caches.
IGNORED_AT_ROOT = {".git", "data", "artifacts", "model_repository", "build"}
IGNORED_ANYWHERE = ("__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache")
# No PYTHONPATH: the fresh virtualenv must run its own installed packages (empty = unset).
ISOLATED = {"PYTHONPATH": ""}


def ignore_non_source(directory: str, names: list[str]) -> set[str]:
    ignored = set(shutil.ignore_patterns(*IGNORED_ANYWHERE)(directory, names))
    if Path(directory) == REPO_ROOT:
        ignored |= {n for n in names if n in IGNORED_AT_ROOT or n.startswith(".venv")}
    return ignored


def run(command: list[str], cwd: Path, timeout: float = COMMAND_DEADLINE_S) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, **ISOLATED},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (this interpreter) with `pip install <source>`: no extras."""
    root = tmp_path_factory.mktemp("serving_install")
    source = root / "source"
    shutil.copytree(REPO_ROOT, source, ignore=ignore_non_source)
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "-q", str(source)], cwd=root, timeout=INSTALL_DEADLINE_S)
    return venv


def test_base_install_has_no_training_dependencies(serving_venv: Path) -> None:
    python = str(serving_venv / "bin" / "python")
    shown = subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", "show", *TRAINING_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        timeout=COMMAND_DEADLINE_S,
    )
    assert "Name:" not in shown.stdout, shown.stdout


def test_serving_entry_points_import_no_tensorflow(serving_venv: Path, tmp_path: Path) -> None:
    """Every command registers, and the serving modules import, without TensorFlow."""
    probe = (
        "import json, sys\n"
        "import cli.main, cli.commands.serve, cli.commands.store, server.app\n"
        "import server.storage.seed, server.inference.backends.onnx_runtime\n"
        "import server.inference.backends.triton_grpc\n"
        "cli.main.build_parser()\n"
        "print(json.dumps({'app': server.app.__file__, 'modules': sorted(sys.modules)}))\n"
    )
    found = json.loads(run([str(serving_venv / "bin" / "python"), "-c", probe], cwd=tmp_path))
    assert Path(found["app"]).is_relative_to(serving_venv)  # the installed copy, not the tree
    heavy = [m for m in found["modules"] if m.partition(".")[0] in {"tensorflow", "keras"}]
    assert heavy == []


def test_kbrec_serve_recommends_without_tensorflow(
    serving_venv: Path, tiny_model_repository: Path, tiny_corpus: Path, tmp_path: Path
) -> None:
    kbrec = str(serving_venv / "bin" / "kbrec")
    db = tmp_path / "kbrec.sqlite"
    run([kbrec, "store", "import", "--corpus", str(tiny_corpus), "--db", str(db)], cwd=tmp_path)
    articles = read_articles(tiny_corpus / ARTICLES_FILE)
    account = articles[0].account_id
    account_ids = {a.article_id for a in articles if a.account_id == account}
    args = ("--repository", str(tiny_model_repository), "--db", str(db))
    with ServeProcess(*args, kbrec=[kbrec], cwd=tmp_path, env=ISOLATED) as server:
        response = httpx.post(
            f"{server.url}/v1/recommendations",
            json={"account_id": account, "text": articles[0].title, "top_k": 3},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        found = [a["article_id"] for a in response.json()["articles"]]
        assert found and set(found) <= account_ids, found
        # What the server process has mapped: ONNX Runtime's library, no TensorFlow's.
        maps = Path(f"/proc/{server.process.pid}/maps").read_text()
        fields = (line.split(maxsplit=5) for line in maps.splitlines())
        mapped = {parts[5] for parts in fields if len(parts) == 6}
        assert any("onnxruntime" in path for path in mapped), sorted(mapped)
        assert [path for path in mapped if "tensorflow" in path] == []
