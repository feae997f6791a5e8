"""Which encoder versions Triton keeps loaded: kbrec decides (explicit model control).

kbrec knows which versions it serves (active and standby); Triton's own
`version_policy` (the newest two) does not, e.g. after a rollback past a newer
version, or with a newer version that failed. So kbrec loads the encoder with
its config.pbtxt and `version_policy: specific` set to exactly those versions.

Measured on tritonserver 2.51 in explicit mode (zero failed requests on the
serving version in each case): versions already loaded are kept, not reloaded;
added versions load next to them (~2 s each on the CPU); dropped ones unload
after the call returns; a version that fails to load makes the call fail with
the reason while the loaded ones keep serving. The override must be the FULL
ModelConfig: a partial one is accepted but reloads the model without its inputs
and outputs, and every request fails.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import tritonclient.grpc.aio as triton
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from kbrec.repository import CONFIG_FILE, MODEL_NAME, ModelVersion, model_dir
from server.inference.backends.base import BackendLoadError
from server.inference.backends.triton_grpc import CHANNEL_ARGS, TritonGrpcBackend, grpc_target

log = logging.getLogger(__name__)

# Loading a version can take long (a TensorRT engine build on a GPU takes minutes).
LOAD_TIMEOUT_S: Final = 600.0


def versions_config(config_text: str, versions: Collection[int]) -> str:
    """config.pbtxt text → the full ModelConfig as JSON, loading exactly `versions`."""
    config = text_format.Parse(config_text, model_config_pb2.ModelConfig())
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(versions))
    return json_format.MessageToJson(config, preserving_proto_field_name=True)


async def ready_versions(client: triton.InferenceServerClient, model: str) -> set[int]:
    index = await client.get_model_repository_index(as_json=True)
    return {
        int(entry["version"])
        for entry in index.get("models", [])
        if entry.get("name") == model and entry.get("state") == "READY" and "version" in entry
    }


async def keep_loaded(
    versions: Collection[ModelVersion], *, url: str, repository: Path, model: str = MODEL_NAME
) -> None:
    """Make Triton hold exactly `versions` of `model` (no call if it already does)."""
    wanted = {version.number for version in versions}
    client = triton.InferenceServerClient(grpc_target(url), channel_args=CHANNEL_ARGS)
    try:
        if await ready_versions(client, model) == wanted:
            return
        config_text = (model_dir(repository, model) / CONFIG_FILE).read_text(encoding="utf-8")
        log.info("Triton at %s: loading %s versions %s", url, model, sorted(wanted))
        await client.load_model(
            model, config=versions_config(config_text, wanted), client_timeout=LOAD_TIMEOUT_S
        )
    except InferenceServerException as exc:
        raise BackendLoadError(f"Triton could not load versions {sorted(wanted)}: {exc}") from exc
    except (OSError, text_format.ParseError) as exc:
        raise BackendLoadError(f"{model} {CONFIG_FILE} in {repository}: {exc}") from exc
    finally:
        await client.close()


@dataclass(frozen=True)
class TritonProvider:
    """`BackendProvider` for a Triton server: gRPC backends per version, and Triton told
    to hold exactly the live versions (the full config.pbtxt with a specific policy)."""

    url: str
    repository: Path
    timeout_s: float = 5.0
    model: str = MODEL_NAME

    async def open(self, version: ModelVersion) -> TritonGrpcBackend:
        return await TritonGrpcBackend.open(
            version, url=self.url, timeout_s=self.timeout_s, model=self.model
        )

    async def hold(self, versions: Collection[ModelVersion]) -> None:
        await keep_loaded(versions, url=self.url, repository=self.repository, model=self.model)
