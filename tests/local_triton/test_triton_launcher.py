"""The launcher and `kbrec triton start` against the real local tritonserver."""

from __future__ import annotations

import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from triton_fixture_helpers import REPO_ROOT, TRITON_ENV, require_triton_env, triton_launch

from kbrec.repository import read_metadata
from local_triton.launcher import TritonLaunchError, TritonPorts, TritonServer, http_ok

DEADLINE_S = 60.0  # for `kbrec triton start` to get ready, then to stop

pytestmark = pytest.mark.triton


def test_model_metadata_matches_the_repository(
    triton_server: TritonServer, tiny_model_repository: Path
) -> None:
    dim = read_metadata(tiny_model_repository / "encoder" / "1").dim
    client = grpcclient.InferenceServerClient(triton_server.grpc_url.removeprefix("grpc://"))
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("encoder", "1")
        metadata = client.get_model_metadata("encoder", "1")
        config = client.get_model_config("encoder").config
    finally:
        client.close()
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input_ids", "INT32", [-1, -1])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("embedding", "FP32", [-1, dim])
    ]
    assert config.backend == "python"
    assert config.dynamic_batching is not None and config.max_batch_size > 1


def test_stop_ends_the_process_and_frees_the_ports(tiny_model_repository: Path) -> None:
    require_triton_env()
    launch = triton_launch(tiny_model_repository)
    with TritonServer(launch) as server:
        assert server.ready()
    assert not http_ok(f"{launch.http_url}/v2/health/live")
    with socket.create_server(("127.0.0.1", launch.ports.grpc)):
        pass  # bindable again


def test_a_server_that_exits_reports_its_log(tiny_model_repository: Path) -> None:
    require_triton_env()
    ports = TritonPorts.free()
    taken = socket.create_server(("127.0.0.1", ports.grpc))  # Triton exits on this error
    with taken, pytest.raises(TritonLaunchError, match="exited with status") as failure:
        TritonServer(triton_launch(tiny_model_repository, ports)).start()
    assert "already in use" in str(failure.value)


def test_a_repository_for_another_backend_is_refused(
    tiny_model_repository: Path, tmp_path: Path
) -> None:
    shutil.copytree(tiny_model_repository, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "encoder" / "config.pbtxt"
    config.write_text(config.read_text().replace('backend: "python"', 'backend: "onnxruntime"'))
    with pytest.raises(TritonLaunchError, match="kbrec convert --backend python"):
        TritonServer(triton_launch(tmp_path)).start()


def test_kbrec_triton_start_serves_until_sigterm(tiny_model_repository: Path) -> None:
    require_triton_env()
    ports = TritonPorts.free()
    command = [sys.executable, "-m", "cli.main", "triton", "start"]
    command += ["--repository", str(tiny_model_repository), "--env", str(TRITON_ENV)]
    command += ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc)]
    command += ["--metrics-port", str(ports.metrics)]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in process.stdout], daemon=True).start()
    try:
        ready = lines.get(timeout=DEADLINE_S * 2)
        assert f"grpc://127.0.0.1:{ports.grpc}" in ready
        assert f"kbrec serve --triton-url grpc://127.0.0.1:{ports.grpc}" in ready
        assert http_ok(f"http://127.0.0.1:{ports.http}/v2/models/encoder/ready")
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(DEADLINE_S)
    assert code == 0
    assert not http_ok(f"http://127.0.0.1:{ports.http}/v2/health/live")
