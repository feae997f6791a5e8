"""Fixtures of the server tests: a repository with a bag-of-words ONNX version."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import publish_bag_of_words_version


@pytest.fixture(scope="session")
def bow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository whose version 1 is the bag-of-words encoder (real ONNX)."""
    repository = tmp_path_factory.mktemp("bow_repository")
    publish_bag_of_words_version(repository)
    return repository
