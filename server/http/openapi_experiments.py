"""The API description of the experiment, feedback and account-settings routes (merged
into `server.http.openapi.DOCUMENT`)."""

from __future__ import annotations

from typing import Any, Final

from kbrec.records import MAX_ID_LENGTH

ID_SCHEMA: Final = {"type": "string", "pattern": "^[A-Za-z0-9._-]+$", "maxLength": MAX_ID_LENGTH}
EVENTS: Final = ["clicked", "helpful", "not_helpful", "ticket_solved"]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(text: str) -> dict[str, Any]:
    return body(ref("Error"), text)


ESTIMATE: Final = {
    "type": "object",
    "properties": {
        "value": {"type": "number"},
        "low": {"type": "number"},
        "high": {"type": "number"},
    },
    "description": "the value and its 95 % interval",
}
ARM_REPORT: Final = {
    "type": "object",
    "properties": {
        "model_version": {"type": "integer"},
        "requests": {"type": "integer"},
        "requests_with_feedback": {"type": "integer"},
        "metrics": {
            "type": "object",
            "description": "ctr@1, ctr@3, ctr@5, helpful, solved (shares of the requests, "
            "Wilson intervals) and mrr (of the clicked article, normal interval)",
            "additionalProperties": ESTIMATE,
        },
    },
}

EXPERIMENT_SCHEMAS: Final[dict[str, Any]] = {
    "ExperimentInput": {
        "type": "object",
        "required": ["treatment_version"],
        "additionalProperties": False,
        "properties": {
            "treatment_version": {"type": "integer", "minimum": 1},
            "control_version": {
                "type": "integer",
                "description": "must be the active version (the default)",
            },
            "treatment_share": {
                "type": "number",
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 1,
                "default": 0.5,
            },
            "unit": {
                "type": "string",
                "enum": ["account", "key"],
                "default": "account",
                "description": "what sticks to an arm: the account, or the request's "
                "assignment_key (hashed with the experiment id)",
            },
        },
    },
    "Experiment": {
        "type": "object",
        "properties": {
            "experiment_id": {"type": "string"},
            "state": {"type": "string", "enum": ["waiting", "running", "stopped"]},
            "control_version": {"type": "integer"},
            "treatment_version": {"type": "integer"},
            "treatment_share": {"type": "number"},
            "unit": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "stopped_at": {"type": ["string", "null"], "format": "date-time"},
            "winner": {"type": ["string", "null"], "enum": ["control", "treatment", None]},
            "activated": {"type": "boolean"},
        },
    },
    "ExperimentReport": {
        "type": "object",
        "properties": {
            "experiment": ref("Experiment"),
            "report": {
                "type": "object",
                "properties": {
                    "arms": {
                        "type": "object",
                        "properties": {"control": ARM_REPORT, "treatment": ARM_REPORT},
                    },
                    "comparisons": {
                        "type": "object",
                        "description": "per metric: treatment minus control and the two-sided "
                        "p-value (pooled two-proportion z-test; Welch for mrr)",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "difference": {"type": "number"},
                                "p_value": {"type": "number"},
                            },
                        },
                    },
                    "primary_metric": {"type": "string"},
                    "alpha": {"type": "number"},
                    "winner": {
                        "type": ["string", "null"],
                        "description": "the arm better on the primary metric at p < alpha",
                    },
                },
            },
        },
    },
    "ExperimentStop": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "winner": {
                "type": "string",
                "enum": ["control", "treatment"],
                "description": "default: the report's winner, else the control",
            },
            "activate_winner": {
                "type": "boolean",
                "default": False,
                "description": "switch a winning treatment in (at once if its articles are "
                "embedded); else a winning treatment is kept as the previous version and a "
                "losing one is retired",
            },
        },
    },
    "FeedbackInput": {
        "type": "object",
        "required": ["request_id", "event"],
        "additionalProperties": False,
        "properties": {
            "request_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "article_id": {
                **ID_SCHEMA,
                "description": "required for clicked, helpful, not_helpful; must be in the "
                "response",
            },
            "event": {"type": "string", "enum": EVENTS},
        },
    },
    "AccountSettings": {
        "type": "object",
        "properties": {
            "account_id": {"type": "string"},
            "min_score": {"type": ["number", "null"], "description": "null: the default"},
            "effective_min_score": {"type": "number"},
        },
    },
}

EXPERIMENT_ID: Final = [
    {
        "name": "experiment_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    }
]
LEADER: Final = "503: not_leader on a process that does not lead the model lifecycle"

EXPERIMENT_PATHS: Final[dict[str, Any]] = {
    "/v1/experiments": {
        "get": {
            "summary": "Every A/B experiment, the newest first (admin)",
            "responses": {"200": body({"type": "object"}, "the experiments")},
        },
        "post": {
            "summary": "Start an A/B experiment between the active version (control) and "
            "another (treatment), loaded and backfilled next to it; one at a time (admin)",
            "requestBody": {"required": True, **body(ref("ExperimentInput"))},
            "responses": {
                "201": body(ref("Experiment"), "running"),
                "202": body(ref("Experiment"), "waiting for the treatment's articles"),
                "404": error("the treatment version is not in the repository"),
                "409": error("another experiment is open (experiment_open)"),
                "422": error("invalid field, or the treatment failed to load"),
                "503": error(LEADER),
            },
        },
    },
    "/v1/experiments/{experiment_id}": {
        "parameters": EXPERIMENT_ID,
        "get": {
            "summary": "An experiment and its report: per arm requests, click-through at "
            "1/3/5, helpful and solve rates, MRR, 95 % intervals, tests (admin)",
            "responses": {
                "200": body(ref("ExperimentReport"), "the experiment"),
                "404": error("no such experiment"),
                "422": error("invalid experiment id"),
            },
        },
    },
    "/v1/experiments/{experiment_id}/stop": {
        "parameters": EXPERIMENT_ID,
        "post": {
            "summary": "Stop an experiment, keeping its winner (admin)",
            "requestBody": {"required": True, **body(ref("ExperimentStop"))},
            "responses": {
                "200": body(ref("ExperimentReport"), "stopped"),
                "404": error("no such experiment"),
                "409": error("stopped already (experiment_stopped)"),
                "422": error("invalid field"),
                "503": error(LEADER),
            },
        },
    },
    "/v1/feedback": {
        "post": {
            "summary": "What the customer did with a recommendation; recorded once per "
            "request, article and event (the request's account, or the admin)",
            "requestBody": {"required": True, **body(ref("FeedbackInput"))},
            "responses": {
                "201": body({"type": "object"}, "recorded"),
                "200": body({"type": "object"}, "recorded before (duplicate: true)"),
                "404": error("the request is not in the recommendation log (request_not_found)"),
                "422": error("invalid field, or the article was not in the response"),
            },
        }
    },
    "/v1/accounts/{account_id}/settings": {
        "parameters": [{"name": "account_id", "in": "path", "required": True, "schema": ID_SCHEMA}],
        "get": {
            "summary": "The account's minimum score (its keys, or the admin)",
            "responses": {"200": body(ref("AccountSettings"), "the settings")},
        },
        "put": {
            "summary": "Set the account's minimum score: recommendations scoring below it "
            "are not returned (admin)",
            "requestBody": {
                "required": True,
                **body(
                    {
                        "type": "object",
                        "required": ["min_score"],
                        "properties": {
                            "min_score": {"type": ["number", "null"], "minimum": -1, "maximum": 1}
                        },
                    }
                ),
            },
            "responses": {
                "200": body(ref("AccountSettings"), "set"),
                "422": error("invalid field"),
            },
        },
    },
}
