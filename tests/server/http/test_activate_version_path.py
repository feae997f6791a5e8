"""The version in `POST /v1/models/{version}/activate` is parsed by the repository's
rule (ASCII digits, no leading zero, at most the stores' 32-bit limit): anything else
is a 422 in the JSON error shape, a well-formed number that is not there a 404, never
a 500. A real app on loopback with the fake backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_helpers import FakeProvider, serve_in_thread, wait_ready

from kbrec.repository import MAX_VERSION
from server.app import create_app
from server.settings import Settings


@pytest.fixture(scope="module")
def http(bow_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    settings = Settings.of(
        repository=bow_repository, db=tmp_path_factory.mktemp("activate") / "kbrec.sqlite", port=0
    )
    with serve_in_thread(create_app(settings, backends=FakeProvider())) as url:
        wait_ready(url)
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


@pytest.mark.parametrize(
    "version",
    [
        "%C2%B2",  # "²": str.isdigit() is True, int() raises
        "%D9%A1",  # "١" (Arabic-Indic one): int() would accept it
        "1" * 4301,  # past int()'s digit limit
        str(MAX_VERSION + 1),
        "12345678901",
        "0123",
        "0",
        "-1",
        "1%0A",
        "%201",
        "1.0",
        "abc",
    ],
)
def test_a_version_that_is_not_a_version_number_is_a_422(http: httpx.Client, version: str) -> None:
    response = http.post(f"/v1/models/{version}/activate")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["code"] == "validation_error"
    assert f"from 1 to {MAX_VERSION}" in error["message"]
    assert len(error["message"]) < 200  # a 4,301-digit input is not echoed whole


@pytest.mark.parametrize("version", [str(MAX_VERSION), "2", "9999"])
def test_a_version_number_that_is_not_published_is_a_404(http: httpx.Client, version: str) -> None:
    response = http.post(f"/v1/models/{version}/activate")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "version_not_found"


def test_the_active_version_activates(http: httpx.Client) -> None:
    response = http.post("/v1/models/1/activate")
    assert response.status_code == 200, response.text
    assert response.json()["active_version"] == 1 and response.json()["switched"] is False


def test_the_openapi_document_bounds_the_version(http: httpx.Client) -> None:
    path = http.get("/openapi.json").json()["paths"]["/v1/models/{version}/activate"]
    (parameter,) = path["parameters"]
    assert parameter["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
