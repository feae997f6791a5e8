"""conversion.triton_config: the config.pbtxt text for both Triton flavours."""

from __future__ import annotations

import re

import pytest

from conversion.triton_config import render_config


def gpu_config(**kwargs: object) -> str:
    return render_config(model="encoder", backend="onnxruntime", dim=384, max_length=256, **kwargs)


def cpu_config(**kwargs: object) -> str:
    return render_config(model="encoder", backend="python", dim=384, max_length=256, **kwargs)


def assert_balanced(text: str) -> None:
    body = re.sub(r'"[^"]*"', '""', text)
    for opener, closer in ("{}", "[]"):
        depth = 0
        for char in body:
            depth += (char == opener) - (char == closer)
            assert depth >= 0
        assert depth == 0


def assert_common(text: str) -> None:
    assert_balanced(text)
    assert 'name: "encoder"' in text
    assert "max_batch_size: 64" in text
    assert "version_policy: { latest: { num_versions: 2 } }" in text
    assert re.search(
        r'input \[\s*\{\s*name: "input_ids"\s*data_type: TYPE_INT32\s*dims: \[ -1 \]', text
    )
    assert re.search(
        r'output \[\s*\{\s*name: "embedding"\s*data_type: TYPE_FP32\s*dims: \[ 384 \]\s*\}', text
    )
    assert re.search(r"dynamic_batching \{\s*max_queue_delay_microseconds: \d+\s*\}", text)


def test_onnxruntime_backend() -> None:
    text = gpu_config()
    assert_common(text)
    assert 'platform: "onnxruntime_onnx"' in text
    assert 'backend: "onnxruntime"' in text
    assert "kind: KIND_GPU" in text
    assert "allow_ragged_batch" not in text, "ONNX Runtime would concatenate ragged rows"
    assert "tensorrt" not in text


def test_onnxruntime_backend_with_tensorrt_fp16() -> None:
    text = gpu_config(tensorrt_fp16=True)
    assert_common(text)
    accelerator = re.search(
        r"optimization \{\s*execution_accelerators \{\s*gpu_execution_accelerator: \[\s*\{"
        r'\s*name: "tensorrt"(.*?)\}\s*\]\s*\}\s*\}',
        text,
        re.S,
    )
    assert accelerator
    params = dict(re.findall(r'parameters \{ key: "(\w+)" value: "([^"]*)" \}', accelerator[1]))
    assert params["precision_mode"] == "FP16"
    assert params["trt_profile_min_shapes"] == "input_ids:1x1"
    assert params["trt_profile_max_shapes"] == "input_ids:64x256"
    assert int(params["max_workspace_size_bytes"]) > 0


def test_python_backend() -> None:
    text = cpu_config()
    assert_common(text)
    assert 'backend: "python"' in text
    assert "platform" not in text
    assert "kind: KIND_CPU" in text
    assert "allow_ragged_batch: true" in text, "model.py pads mixed lengths itself"
    assert "parameters" not in text


def test_python_backend_threads_parameter() -> None:
    text = cpu_config(intra_op_threads=2)
    assert_balanced(text)
    assert re.search(
        r'parameters \{\s*key: "intra_op_threads"\s*value: \{ string_value: "2" \}\s*\}', text
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorflow"}, "backend must be one of"),
        ({"backend": "python", "tensorrt_fp16": True}, "needs the onnxruntime backend"),
        ({"backend": "onnxruntime", "intra_op_threads": 2}, "python backend only"),
        ({"backend": "python", "dim": 0}, "dim must be positive"),
    ],
)
def test_rejects_invalid_combinations(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"model": "encoder", "dim": 8, "max_length": 16, **kwargs}
    with pytest.raises(ValueError, match=message):
        render_config(**arguments)


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_parses_as_triton_model_config(backend: str) -> None:
    """Strict check against Triton's own proto where tritonclient is installed (not in .venv)."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    config = text_format.Parse(
        gpu_config(tensorrt_fp16=True) if backend == "onnxruntime" else cpu_config(),
        model_config_pb2.ModelConfig(),
    )
    assert config.max_batch_size == 64
    assert config.version_policy.latest.num_versions == 2
    assert [i.name for i in config.input] == ["input_ids"]
    assert list(config.output[0].dims) == [384]
