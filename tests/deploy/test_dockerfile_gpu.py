"""Dockerfile.gpu, read without Docker: what it installs into the front end's virtualenv
and the `KBREC_*` settings it bakes in.

The image cannot be built here (no Docker engine, no GPU): these checks keep the text
in step with pyproject.toml and `kbrec serve`'s settings. Its lint is hadolint's
(README, "GPU image").
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from server.settings import KNOBS, settings_from

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile.gpu"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments out."""
    joined = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def pip_installs(text: str) -> list[list[str]]:
    """The arguments of each `pip install` in the RUN instructions."""
    installs = []
    for keyword, rest in instructions(text):
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def environment(text: str) -> dict[str, str]:
    """What the ENV instructions set (the `NAME=value ...` form)."""
    env: dict[str, str] = {}
    for keyword, rest in instructions(text):
        if keyword == "ENV":
            for pair in rest.split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def extras() -> dict[str, list[Requirement]]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {
        name: [Requirement(spec) for spec in specs]
        for name, specs in project["optional-dependencies"].items()
    }


def front_end_extras(text: str) -> list[str]:
    """The extras of the one `pip install` of the project (`/src[...]`)."""
    (install,) = [args for args in pip_installs(text) if any(a.startswith("/src") for a in args)]
    (source,) = [arg for arg in install if arg.startswith("/src")]
    match = re.fullmatch(r"/src(?:\[([^\]]*)\])?", source)
    assert match, f"not an install of /src: {source}"
    return [name.strip() for name in (match.group(1) or "").split(",") if name.strip()]


def test_the_front_end_gets_cupy_for_cuda_12_and_no_onnxruntime_gpu() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    chosen = front_end_extras(text)
    assert chosen == ["gpu-ranking"]
    known = extras()
    names = {requirement.name for extra in chosen for requirement in known[extra]}
    assert names == {"cupy-cuda12x"}  # the base image is CUDA 12.6; Triton embeds
    # The same CuPy range as the `gpu` extra of CUDA 12 hosts.
    (ranking,) = known["gpu-ranking"]
    (gpu_cupy,) = [r for r in known["gpu"] if r.name == "cupy-cuda12x"]
    assert ranking.specifier == gpu_cupy.specifier
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:24\.12-py3$", text, re.MULTILINE)


def test_the_baked_in_settings_are_known_and_rank_on_the_gpu_when_there_is_one() -> None:
    env = environment(DOCKERFILE.read_text(encoding="utf-8"))
    settings = {name: value for name, value in env.items() if name.startswith("KBREC_")}
    unknown = [name for name in settings if name.removeprefix("KBREC_").lower() not in KNOBS]
    assert unknown == []
    assert settings["KBREC_RANKING_DEVICE"] == "auto"
    # Valid values, as `kbrec serve` reads them (an admin token is given at `docker run`).
    assert settings_from(settings).inference.ranking_device == "auto"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'RUN python3 -m venv /v \\\n    && pip install --no-cache-dir "/src[a, b]" \\\n',
            ["a", "b"],
        ),
        ("RUN pip install /src && rm -rf /src\n", []),
    ],
)
def test_the_parser_reads_the_extras(text: str, expected: list[str]) -> None:
    assert front_end_extras(text) == expected


def test_the_parser_reads_env_over_lines_and_comments() -> None:
    text = "ENV A=1 \\\n    # a comment\n    B=two\nRUN echo\n"
    assert environment(text) == {"A": "1", "B": "two"}
