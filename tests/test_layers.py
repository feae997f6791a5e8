"""The layers import downward only (docs/architecture.md, "Layers").

Read with `ast` from the source tree, so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Top-level packages by layer: a package may import its own layer's code only from
# itself, and any package of a lower layer.
PACKAGE_LAYERS: dict[str, int] = {
    "kbrec": 0,  # the base: repository contract, article records, tokenization, ...
    "training": 1,
    "conversion": 1,
    "server": 1,
    "loadtest": 1,
    "local_triton": 1,
    "cli": 2,
    "bench": 2,
}
# Inside server/: sub-packages (or modules) by layer, the same rule.
SERVER_LAYERS: dict[str, int] = {
    "errors": 0,
    "heap": 0,
    "storage": 1,
    "inference": 1,
    "versions": 2,
    "experiments": 3,
    "settings": 3,
    "service": 4,
    "http": 5,
    "app": 6,
}
# Training-only dependencies: the serving install does not have them.
TRAINING_ONLY = {"tensorflow", "keras", "tf2onnx", "safetensors", "bm25s", "Stemmer"}


def source_files(package: str) -> list[Path]:
    return sorted((REPO_ROOT / package).rglob("*.py"))


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import in the file, nested ones included."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(package: str) -> Iterator[str]:
    for path in source_files(package):
        importer = module_name(path)
        for line, imported in imported_modules(path):
            problem = layer_problem(importer, imported)
            if problem:
                where = f"{path.relative_to(REPO_ROOT)}:{line}"
                yield f"{where}: {importer} imports {imported}: {problem}"


def layer_problem(importer: str, imported: str) -> str | None:
    top, imported_top = importer.split(".")[0], imported.split(".")[0]
    if (
        imported_top in TRAINING_ONLY
        and PACKAGE_LAYERS[top] < 2
        and top
        not in {
            "training",
            "conversion",
        }
    ):
        return "a training-only dependency outside training/ and conversion/"
    if imported_top not in PACKAGE_LAYERS or imported_top == top:
        return server_problem(importer, imported) if top == imported_top == "server" else None
    if PACKAGE_LAYERS[imported_top] >= PACKAGE_LAYERS[top]:
        return f"layer {PACKAGE_LAYERS[imported_top]} from layer {PACKAGE_LAYERS[top]}"
    return None


def server_problem(importer: str, imported: str) -> str | None:
    importer_room, imported_room = importer.split(".")[1:2], imported.split(".")[1:2]
    if not importer_room or not imported_room or importer_room == imported_room:
        return None  # server/__init__, or within one sub-package
    ours, theirs = SERVER_LAYERS[importer_room[0]], SERVER_LAYERS[imported_room[0]]
    if theirs >= ours:
        return f"server layer {theirs} ({imported_room[0]}) from {ours} ({importer_room[0]})"
    return None


@pytest.mark.parametrize("package", sorted(PACKAGE_LAYERS))
def test_imports_go_downward(package: str) -> None:
    assert list(violations(package)) == []


def test_every_package_and_server_room_has_a_layer() -> None:
    packages = {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")}
    assert packages == set(PACKAGE_LAYERS)
    rooms = {p.stem if p.is_file() else p.name for p in (REPO_ROOT / "server").iterdir()}
    assert rooms - {"__init__", "__pycache__"} == set(SERVER_LAYERS)


@pytest.mark.parametrize(
    ("importer", "imported", "wrong"),
    [
        ("server.service", "training.pairs", True),
        ("server.inference.batching", "loadtest.runner", True),
        ("server.storage.sqlite", "tensorflow", True),
        ("kbrec.records", "server.errors", True),
        ("loadtest.sources", "training.corpus.libreoffice", True),
        ("server.inference.backends.triton_grpc", "server.versions.lifecycle", True),
        ("server.storage.store", "server.inference.index", True),
        ("server.versions.lifecycle", "server.http.errors", True),
        ("cli.commands.serve", "server.settings", False),
        ("server.versions.backfill", "server.inference.serving_model", False),
        ("server.inference.batching", "server.inference.compute_gate", False),
        ("training.train", "tensorflow", False),
        ("server.http.errors", "kbrec.zendesk", False),
    ],
)
def test_the_rule_itself(importer: str, imported: str, wrong: bool) -> None:
    assert (layer_problem(importer, imported) is not None) is wrong
