"""The python-backend model.py, run in-process with a fake triton_python_backend_utils.

It is imported the way Triton's stub imports it — the model directory on
sys.path, module `<version>.model` — so the bytecode behaviour is the real one.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conversion.onnx_export import load_onnx_embedder

TEMPLATE = Path(__file__).parents[2] / "conversion" / "templates" / "triton_python_model.py"


class FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeRequest:
    def __init__(self, *tensors: FakeTensor) -> None:
        self.tensors = {tensor.name(): tensor for tensor in tensors}


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor], error: Any = None) -> None:
        self.output_tensors, self.error = output_tensors, error


class FakeError:
    def __init__(self, message: str) -> None:
        self._message = message

    def message(self) -> str:
        return self._message


def fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = FakeTensor
    module.InferenceResponse = FakeResponse
    module.TritonError = FakeError
    module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    return module


def import_like_the_stub(model_dir: Path, version: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Triton's stub: sys.path gets the model directory, then `import <version>.model`."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as in a plain stub process
    monkeypatch.syspath_prepend(str(model_dir))
    importlib.invalidate_caches()
    for name in (version, f"{version}.model"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(f"{version}.model")  # callers drop it from sys.modules


@pytest.fixture
def version_dir(published: Any, tmp_path: Path) -> Path:
    """A private copy of published version 1 (the shared repository stays untouched)."""
    target = tmp_path / "encoder" / "1"
    shutil.copytree(published.repository / "encoder" / "1", target)
    return target


@pytest.fixture
def model_module(version_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    module = import_like_the_stub(version_dir.parent, "1", monkeypatch)
    yield module
    for name in ("1.model", "1"):
        sys.modules.pop(name, None)


def initialized(module: Any, parameters: dict[str, Any] | None = None) -> Any:
    model = module.TritonPythonModel()
    config = {"name": "encoder", "parameters": parameters or {}}
    model.initialize({"model_config": json.dumps(config), "model_version": "1"})
    return model


def ids_request(ids: np.ndarray) -> FakeRequest:
    return FakeRequest(FakeTensor("input_ids", ids))


def test_mixed_lengths_in_one_batch_match_single_runs(model_module: Any, version_dir: Path) -> None:
    model = initialized(model_module)
    rng = np.random.default_rng(0)
    batches = [
        np.array([[2, 40, 41, 3]], dtype=np.int32),
        np.array([[2, *rng.integers(5, 1500, 7), 3], [2, 60, 3, 0, 0, 0, 0, 0, 0]], np.int32),
        rng.integers(5, 1500, size=(3, 2)).astype(np.int32),
    ]
    responses = model.execute([ids_request(ids) for ids in batches])
    reference = load_onnx_embedder(version_dir / "model.onnx")
    assert len(responses) == len(batches)
    for response, ids in zip(responses, batches, strict=True):
        assert response.error is None
        (tensor,) = response.output_tensors
        assert tensor.name() == "embedding"
        assert tensor.as_numpy().dtype == np.float32
        assert tensor.as_numpy().shape == (ids.shape[0], 32)
        np.testing.assert_allclose(tensor.as_numpy(), reference(ids), atol=1e-5)
    model.finalize()


def test_a_bad_request_gets_its_own_error(model_module: Any) -> None:
    model = initialized(model_module)
    good = np.array([[2, 40, 3]], dtype=np.int32)
    requests = [
        ids_request(good),
        ids_request(good.astype(np.int64)),
        ids_request(good[0]),
        FakeRequest(FakeTensor("tokens", good)),
    ]
    responses = model.execute(requests)
    assert responses[0].error is None and responses[0].output_tensors[0].as_numpy().shape == (1, 32)
    assert "must be int32" in responses[1].error.message()
    assert "must be [batch, seq]" in responses[2].error.message()
    assert "missing input 'input_ids'" in responses[3].error.message()
    assert all(r.output_tensors == [] for r in responses[1:])


def test_a_runtime_failure_reaches_every_request(
    model_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = initialized(model_module)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "_session", types.SimpleNamespace(run=fail))
    ids = np.array([[2, 40, 3]], dtype=np.int32)
    responses = model.execute([ids_request(ids), ids_request(ids)])
    assert [r.error.message() for r in responses] == ["ONNX Runtime failed: out of memory"] * 2


def test_intra_op_threads_parameter(model_module: Any) -> None:
    model = initialized(model_module, {"intra_op_threads": {"string_value": "1"}})
    assert model._session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(ValueError, match="intra_op_threads must be an integer"):
        initialized(model_module, {"intra_op_threads": {"string_value": "two"}})


def test_import_writes_no_bytecode_into_the_version(model_module: Any, version_dir: Path) -> None:
    assert Path(model_module.__file__).parent == version_dir
    assert (version_dir / "__pycache__").is_file(), "the blocker is still a plain file"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "__pycache__",
        "metadata.json",
        "model.onnx",
        "model.py",
        "tokenizer.json",
    ]


def test_without_the_blocker_the_stub_import_would_write_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the blocker exists: sys.dont_write_bytecode in model.py comes too late for itself."""
    version = tmp_path / "encoder" / "7"
    version.mkdir(parents=True)
    shutil.copyfile(TEMPLATE, version / "model.py")
    try:
        import_like_the_stub(version.parent, "7", monkeypatch)
        assert (version / "__pycache__").is_dir()
        assert list((version / "__pycache__").glob("model.*.pyc"))
    finally:
        for name in ("7.model", "7"):
            sys.modules.pop(name, None)


def test_template_imports_nothing_from_this_repository() -> None:
    source = TEMPLATE.read_text(encoding="utf-8")
    imports = [line.split()[1] for line in source.splitlines() if line.startswith("import ")]
    imports += [line.split()[1] for line in source.splitlines() if line.startswith("from ")]
    assert not {"kbrec", "conversion", "training", "server"} & {i.split(".")[0] for i in imports}
