"""Request bodies of the experiment, feedback and account-settings routes, validated into
what the service takes (422 for bad fields, in the one error shape)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from server.errors import InvalidRequest
from server.experiments.assignment import Arm, Unit
from server.http.payloads import checked_id, json_object, json_type, required_string
from server.storage.experiment_tables import FeedbackEvent

REQUEST_ID: Final = re.compile(r"[0-9a-f]{32}")  # what POST /v1/recommendations hands out
EXPERIMENT_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_SHARE: Final = 0.5
Choice = TypeVar("Choice", Unit, Arm, FeedbackEvent)


@dataclass(frozen=True)
class ExperimentStart:
    treatment_version: int
    treatment_share: float
    unit: Unit
    control_version: int | None


@dataclass(frozen=True)
class ExperimentStop:
    activate_winner: bool
    winner: Arm | None


@dataclass(frozen=True)
class FeedbackInput:
    request_id: str
    article_id: str | None
    event: FeedbackEvent


def no_unknown_fields(body: dict[str, Any], known: set[str]) -> None:
    unknown = set(body) - known
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}; expected some of {sorted(known)}")


def version_field(body: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name!r} is required")
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidRequest(f"{name!r} must be a positive integer, got {value!r}")
    return value


def choice(
    body: dict[str, Any], name: str, kind: type[Choice], default: Choice | None
) -> Choice | None:
    value = body.get(name)
    if value is None:
        return default
    allowed = [member.value for member in kind]
    if not isinstance(value, str) or value not in allowed:
        raise InvalidRequest(f"{name!r} must be one of {allowed}, got {value!r}")
    return kind(value)


def parse_experiment_start(data: object) -> ExperimentStart:
    body = json_object(data)
    no_unknown_fields(body, {"control_version", "treatment_version", "treatment_share", "unit"})
    share = body.get("treatment_share", DEFAULT_SHARE)
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share < 1:
        raise InvalidRequest(f"'treatment_share' must be a number in (0, 1), got {share!r}")
    unit = choice(body, "unit", Unit, Unit.ACCOUNT)
    assert unit is not None
    treatment = version_field(body, "treatment_version", required=True)
    assert treatment is not None
    control = version_field(body, "control_version", required=False)
    return ExperimentStart(treatment, float(share), unit, control)


def parse_experiment_stop(data: object) -> ExperimentStop:
    body = {} if data is None else json_object(data)
    no_unknown_fields(body, {"activate_winner", "winner"})
    activate = body.get("activate_winner", False)
    if not isinstance(activate, bool):
        raise InvalidRequest(f"'activate_winner' must be a boolean, got {json_type(activate)}")
    return ExperimentStop(activate, choice(body, "winner", Arm, None))


def parse_feedback(data: object) -> FeedbackInput:
    body = json_object(data)
    no_unknown_fields(body, {"request_id", "article_id", "event"})
    request_id = required_string(body, "request_id")
    if not REQUEST_ID.fullmatch(request_id):
        raise InvalidRequest(
            f"'request_id' must be the 32 hex digits of a recommendation's request_id, "
            f"got {request_id[:40]!r}"
        )
    article = body.get("article_id")
    article_id = None if article is None else checked_id(article, "article id")
    event = choice(body, "event", FeedbackEvent, None)
    if event is None:
        raise InvalidRequest("'event' is required")
    return FeedbackInput(request_id, article_id, event)


def parse_min_score(data: object) -> float | None:
    body = json_object(data)
    no_unknown_fields(body, {"min_score"})
    if "min_score" not in body:
        raise InvalidRequest("'min_score' is required (null: the service's default)")
    value = body["min_score"]
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not -1 <= value <= 1
    ):
        raise InvalidRequest(f"'min_score' must be a number in [-1, 1] or null, got {value!r}")
    return float(value)


def experiment_id_param(raw: str) -> str:
    if not EXPERIMENT_ID.fullmatch(raw):
        raise InvalidRequest(f"invalid experiment id {raw[:70]!r}", "invalid_id")
    return raw
