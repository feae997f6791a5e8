"""Settings: defaults, KBREC_* variables, flags over variables, validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from server import settings as settings_module
from server.inference.batching import BatchingConfig
from server.settings import (
    AUTO_MAX_INSTANCES,
    KNOBS,
    SETTING_HELP,
    InferenceSettings,
    Settings,
    settings_from,
)
from server.versions.backfill import BackfillPacing


def test_defaults_match_the_documented_command_line() -> None:
    settings = settings_from({})
    assert settings == Settings()
    assert settings.repository == Path("model_repository")
    assert settings.db == Path("data/kbrec.sqlite")
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 8000)
    assert settings.base_url == "http://127.0.0.1:8000"


def test_every_field_has_help() -> None:
    assert set(SETTING_HELP) == set(KNOBS)


def test_environment_then_flags() -> None:
    environ = {
        "KBREC_PORT": "9001",
        "KBREC_DB": "/tmp/x.sqlite",
        "KBREC_MAX_WAIT_MS": "0.5",
        "KBREC_ACCESS_LOG": "yes",
        "UNRELATED": "1",
    }
    settings = settings_from(environ, {"port": 9002, "host": None})
    assert settings.http.port == 9002  # the flag wins
    assert settings.http.host == "127.0.0.1"  # an unset flag leaves the default
    assert settings.db == Path("/tmp/x.sqlite")
    assert settings.batching.max_wait_ms == 0.5
    assert settings.http.access_log is True


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"KBREC_PORT": "eighty"}, "KBREC_PORT"),
        ({"KBREC_ACCESS_LOG": "maybe"}, "KBREC_ACCESS_LOG"),
        ({"KBREC_MAX_BATCH_SIZE": "0"}, "max_batch_size"),
        ({"KBREC_PORT": "70000"}, "port"),
        ({"KBREC_MAX_WAIT_MS": "-1"}, "max_wait_ms"),
        ({"KBREC_MAX_QUEUE": "8", "KBREC_MAX_BATCH_SIZE": "16"}, "max_queue"),
        ({"KBREC_INGEST_MAX_QUEUE": "1"}, "ingest_max_queue"),
        ({"KBREC_TRITON_URL": "http://127.0.0.1:8000"}, "triton_url"),
        ({"KBREC_TRITON_TIMEOUT_S": "0"}, "triton_timeout_s"),
        ({"KBREC_RANKING_THREADS": "0"}, "ranking_threads"),
        ({"KBREC_MODEL_INSTANCES": "-1"}, "model_instances"),
        ({"KBREC_LONE_BATCH_THREADS": "-1"}, "lone_batch_threads"),
    ],
)
def test_bad_values_are_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from(environ)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().repository = Path("x")  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().http.port = 1  # type: ignore[misc]


def test_ipv6_base_url() -> None:
    assert Settings.of(host="::1", port=80).base_url == "http://[::1]:80"


def test_nested_sections_take_flat_knob_names() -> None:
    settings = Settings.of(port=0, max_wait_ms=1.5, backfill_share=0.5, triton_url="grpc://h:1")
    assert settings.http.port == 0
    assert settings.batching.max_wait_ms == 1.5
    assert settings.backfill.share == 0.5
    assert settings.inference.triton_url == "grpc://h:1"
    assert {knob.value(settings) for knob in (KNOBS["port"], KNOBS["backfill_share"])} == {0, 0.5}
    with pytest.raises(TypeError, match="max_wait_s"):
        Settings.of(max_wait_s=1)


def test_one_default_per_knob() -> None:
    """Each knob's default is its section's, so the service and the code it configures
    cannot disagree (the backfill step once defaulted to 4096 tokens in one, 256 in the
    other)."""
    settings = Settings()
    assert settings.backfill == BackfillPacing()
    assert settings.batching == BatchingConfig()
    assert KNOBS["backfill_step_tokens"].default == BackfillPacing().step_tokens


@pytest.mark.parametrize(
    ("knobs", "cores", "workers", "instances"),
    [
        ({}, 2, 1, 2),  # one per core
        ({}, 16, 1, AUTO_MAX_INSTANCES),  # at most a few copies of the weights
        ({}, 16, 8, 2),  # each worker process: its share of the cores
        ({}, 2, 4, 1),
        ({"model_instances": 3}, 2, 1, 3),  # as set
        ({"device": "cuda"}, 16, 1, 1),  # a GPU batches on its own
        ({"triton_url": "grpc://127.0.0.1:8001"}, 16, 1, 1),
    ],
)
def test_model_instances_default_to_one_per_core_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
    knobs: dict[str, object],
    cores: int,
    workers: int,
    instances: int,
) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    assert InferenceSettings(**knobs).instances(workers) == instances  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("knobs", "cores", "workers", "expected"),
    [
        ({}, 2, 1, (2, 1, 2)),  # (instances, intra-op threads each, a batch alone)
        ({}, 16, 8, (2, 1, 2)),  # each worker: its share of the cores
        ({}, 2, 4, (1, 1, 1)),
        ({}, 8, 1, (AUTO_MAX_INSTANCES, 8 // AUTO_MAX_INSTANCES, 8)),
        ({"lone_batch_threads": 3}, 2, 1, (2, 1, 3)),
        ({"intra_op_threads": 2}, 2, 1, (2, 2, 2)),  # not more than an instance: none
    ],
)
def test_the_embedded_backend_gets_instances_threads_and_a_lone_batch_session(
    monkeypatch: pytest.MonkeyPatch,
    knobs: dict[str, object],
    cores: int,
    workers: int,
    expected: tuple[int, int, int],
) -> None:
    from server import app as app_module

    monkeypatch.setattr(settings_module, "usable_cores", lambda: cores)
    provider = app_module.default_backends(Settings.of(workers=workers, **knobs))
    assert isinstance(provider, app_module.OnnxRuntimeProvider)
    assert (provider.instances, provider.intra_op_threads, provider.lone_threads) == expected
