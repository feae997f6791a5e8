"""Locating pytriton's tritonserver in a virtualenv and putting the backend stub in place,
on a fake tree with the wheel's layout (no Triton needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local_triton.environment import TritonEnvError, TritonEnvironment, install_stub, main


def fake_venv(root: Path, python: str = "3.11") -> Path:
    """The files `make triton-env` leaves, minus the stub copy it makes."""
    tree = root / "lib" / f"python{python}" / "site-packages" / "pytriton" / "tritonserver"
    for path, text in (
        (tree / "bin" / "tritonserver", "#!/bin/sh\n"),
        (tree / "backends" / "python" / "libtriton_python.so", ""),
        (tree / "python_backend_stubs" / python / "triton_python_backend_stub", "stub"),
        (root / "bin" / "python3", "#!/bin/sh\n"),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if "." not in path.name else 0o644)
    return root


def test_locate_finds_the_tree_and_the_python_version(tmp_path: Path) -> None:
    environment = TritonEnvironment.locate(fake_venv(tmp_path / "venv", "3.12"))
    assert environment.python_version == "3.12"
    assert environment.tritonserver.name == "tritonserver"
    assert environment.bin_dir == (tmp_path / "venv" / "bin").absolute()
    assert environment.stub.parent == environment.backend_directory / "python"


def test_a_missing_environment_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(TritonEnvError, match="make triton-env"):
        TritonEnvironment.locate(tmp_path)


def test_without_the_stub_in_place_the_check_fails(tmp_path: Path) -> None:
    environment = TritonEnvironment.locate(fake_venv(tmp_path))
    with pytest.raises(TritonEnvError, match="triton_python_backend_stub"):
        environment.check()


def test_install_stub_copies_the_stub_of_the_venvs_python(tmp_path: Path) -> None:
    environment = TritonEnvironment.locate(fake_venv(tmp_path))
    stub = install_stub(environment)
    assert stub == environment.stub
    assert stub.read_text() == "stub" and os.access(stub, os.X_OK)
    environment.check()
    assert sorted(p.name for p in stub.parent.iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
    ]  # no partial file left behind


def test_main_is_what_the_makefile_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(fake_venv(tmp_path))]) == 0
    assert "stub for Python 3.11" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2
    assert "make triton-env" in capsys.readouterr().err
