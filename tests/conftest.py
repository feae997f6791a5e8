"""Session fixtures: a synthetic corpus, a tiny trained encoder, a converted repository,
a PostgreSQL server.

The tiny encoder is a real Keras model (random init, 2 layers, hidden 32) that
is fine-tuned for a few steps, exported as a SavedModel and converted to ONNX
by the same code paths as the real one; it takes seconds, not minutes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# tests/ is on sys.path: pytest puts the rootdir of conftest.py there.
from corpus_factory import TINY_TRAIN_ARGS, make_corpus

# A real PostgreSQL: `postgres_url` gives a test a fresh database (tests/postgres_fixture.py).
from postgres_fixture import postgres_server as postgres_server
from postgres_fixture import postgres_url as postgres_url

if TYPE_CHECKING:
    from local_triton.launcher import TritonServer


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out)
    return out


def train_tiny(corpus: Path, out: Path, seed: int = 0) -> Path:
    from cli.main import main

    args = ["train", "--corpus", str(corpus), "--out", str(out), "--seed", str(seed)]
    assert main([*args, "--skip-eval", *TINY_TRAIN_ARGS]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_export_dir(tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuned tiny encoder exported as a SavedModel (+ tokenizer.json, configs)."""
    return train_tiny(tiny_corpus, tmp_path_factory.mktemp("export") / "encoder")


@pytest.fixture(scope="session")
def tiny_model_repository(tiny_export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the tiny encoder as version 1 (python backend config)."""
    from cli.main import main

    repository = tmp_path_factory.mktemp("model_repository")
    args = ["convert", "--saved-model", str(tiny_export_dir), "--repository", str(repository)]
    assert main([*args, "--backend", "python"]) == 0
    return repository


@pytest.fixture(scope="session")
def triton_server(tiny_model_repository: Path) -> Iterator[TritonServer]:
    """One Triton for the session's read-only tests."""
    from triton_fixture_helpers import require_triton_env, triton_launch

    from local_triton.launcher import TritonServer

    require_triton_env()
    with TritonServer(triton_launch(tiny_model_repository)) as server:
        yield server
