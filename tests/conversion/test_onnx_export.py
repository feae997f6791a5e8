"""conversion.onnx_export: tf2onnx output, and the checks that catch tf2onnx's silent failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conversion.errors import ConversionError
from conversion.onnx_export import (
    check_onnx_contract,
    check_onnx_file,
    export_onnx,
    load_onnx_embedder,
)
from conversion.signature import load_serving_function


def test_encoder_exports_with_the_serving_contract(tiny_export_dir: Path, tmp_path: Path) -> None:
    """The real encoder graph: also the regression test for tf2onnx's reshape_optimizer bug."""
    serving = load_serving_function(tiny_export_dir, 32)
    lines: list[str] = []
    opset = export_onnx(serving.function, tmp_path / "model.onnx", 32, log=lines.append)
    assert opset == 18
    assert lines == ["converting to ONNX (opset 18)…", "checker ok", "ORT ok"]

    model = onnx.load(str(tmp_path / "model.onnx"))
    assert [(op.domain, op.version) for op in model.opset_import if op.domain == ""] == [("", 18)]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input_ids"
    assert graph_input.type.tensor_type.elem_type == TensorProto.INT32
    assert [d.HasField("dim_value") for d in graph_input.type.tensor_type.shape.dim] == [
        False,
        False,
    ]
    assert graph_output.name == "embedding"
    assert graph_output.type.tensor_type.elem_type == TensorProto.FLOAT
    out_dims = graph_output.type.tensor_type.shape.dim
    assert not out_dims[0].HasField("dim_value")
    assert out_dims[1].dim_value == 32

    ids = np.array([[2, 40, 41, 42, 3], [2, 50, 3, 0, 0]], dtype=np.int32)
    onnx_out = load_onnx_embedder(tmp_path / "model.onnx")(ids)
    np.testing.assert_allclose(onnx_out, serving.embed(ids), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(onnx_out, axis=1), 1.0, atol=1e-5)


def test_unconvertible_op_fails_clearly_and_leaves_no_file(
    stand_in_export: object, tmp_path: Path
) -> None:
    serving = load_serving_function(stand_in_export(use_erfc=True), 8)
    output = tmp_path / "model.onnx"
    with pytest.raises(ConversionError) as raised:
        export_onnx(serving.function, output, 8, log=lambda _: None)
    message = str(raised.value)
    assert "opset 18" in message and "opset 17" in message
    assert "Erfc" in message
    assert "\n" not in message
    assert not output.exists()


def io_model(path: Path, input_name: str, input_type: int, output_name: str, dim: int) -> Path:
    """ids → Cast float → ReduceMean over seq, broadcast to [batch, dim] by a MatMul."""
    nodes = [
        helper.make_node("Cast", [input_name], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["as_float", "axes"], ["mean"], keepdims=1),
        helper.make_node("MatMul", ["mean", "ones"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "io",
        [helper.make_tensor_value_info(input_name, input_type, ["batch", "seq"])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", dim])],
        initializer=[
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("ones", TensorProto.FLOAT, [1, dim], [1.0] * dim),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_contract_accepts_the_expected_io(tmp_path: Path) -> None:
    path = io_model(tmp_path / "ok.onnx", "input_ids", TensorProto.INT32, "embedding", 4)
    check_onnx_file(path)
    check_onnx_contract(path, 4)


@pytest.mark.parametrize(
    ("input_name", "input_type", "output_name", "dim", "message"),
    [
        ("ids", TensorProto.INT32, "embedding", 4, "inputs must be exactly \\[input_ids"),
        ("input_ids", TensorProto.INT64, "embedding", 4, "tensor\\(int64\\)"),
        ("input_ids", TensorProto.INT32, "output_0", 4, "outputs must be exactly \\[embedding"),
        ("input_ids", TensorProto.INT32, "embedding", 5, "has shape \\['batch', 5\\], expected"),
    ],
)
def test_contract_rejects_wrong_io(
    tmp_path: Path, input_name: str, input_type: int, output_name: str, dim: int, message: str
) -> None:
    path = io_model(tmp_path / "bad.onnx", input_name, input_type, output_name, dim)
    with pytest.raises(ConversionError, match=message):
        check_onnx_contract(path, 4)


def test_checker_rejects_an_unknown_op(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Erfc", ["x"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(ConversionError, match=r"onnx\.checker rejected the model: .*Erfc"):
        check_onnx_file(path)
    with pytest.raises(ConversionError, match="ONNX Runtime cannot load the model"):
        check_onnx_contract(path, 1)
