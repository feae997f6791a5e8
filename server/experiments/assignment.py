"""Sticky, reproducible assignment of a request to an experiment's arm.

The unit (an account, or a caller-given user or ticket key) is hashed with the
experiment id: the same unit always lands in the same arm of the same experiment,
in any process and after any restart, and different experiments split units
independently. SHA-256 rather than Python's `hash`, which is salted per process.
"""

from __future__ import annotations

import enum
import hashlib


class Arm(enum.StrEnum):
    CONTROL = "control"
    TREATMENT = "treatment"


class Unit(enum.StrEnum):
    """What is assigned: every request of an account alike, or of a user/ticket key."""

    ACCOUNT = "account"
    KEY = "key"


def unit_position(experiment_id: str, unit_key: str) -> float:
    """Where the unit falls in [0, 1) for this experiment: uniform over units."""
    digest = hashlib.sha256(f"{experiment_id}\x00{unit_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_for(experiment_id: str, unit_key: str, treatment_share: float) -> Arm:
    if unit_position(experiment_id, unit_key) < treatment_share:
        return Arm.TREATMENT
    return Arm.CONTROL
