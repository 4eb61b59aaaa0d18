"""Status conditions: lastTransitionTime moves only when the status does, and a status that
says nothing new is not written (which is what keeps a restart free of API writes)."""

from __future__ import annotations

import datetime
from typing import Any

from pkcs11_issuer.controller import conditions
from pkcs11_issuer.controller.conditions import Condition, render, status_patch

EARLIER = datetime.datetime(2025, 3, 1, 8, 0, 0, tzinfo=datetime.UTC)
NOW = datetime.datetime(2025, 3, 2, 9, 30, 15, 123456, tzinfo=datetime.UTC)
READY = Condition("Ready", "True", "Ready", "Certificate is up to date and has not expired")
NOT_READY = Condition("Ready", "False", "IssuerNotReady", "Issuer 'demo-ca' is not ready")


def _status(*rendered: object, **fields: Any) -> dict[str, Any]:
    return {"conditions": list(rendered), **fields}


def test_a_new_condition_starts_now_in_the_api_format() -> None:
    [entry] = render([READY], None, generation=4, now=NOW)
    assert entry == {
        "type": "Ready",
        "status": "True",
        "reason": "Ready",
        "message": "Certificate is up to date and has not expired",
        "lastTransitionTime": "2025-03-02T09:30:15Z",
        "observedGeneration": 4,
    }


def test_the_timestamp_is_utc_whatever_the_clock_zone() -> None:
    paris = datetime.timezone(datetime.timedelta(hours=1))
    [entry] = render([READY], None, generation=None, now=NOW.astimezone(paris))
    assert entry["lastTransitionTime"] == "2025-03-02T09:30:15Z"
    assert conditions.parse_timestamp(entry["lastTransitionTime"]) == NOW.replace(microsecond=0)
    assert conditions.parse_timestamp("yesterday") is None
    assert conditions.parse_timestamp(None) is None


def test_an_unchanged_status_keeps_its_transition_time() -> None:
    before = render([READY], None, generation=1, now=EARLIER)
    # A later pass with another reason and message but the same status: not a transition.
    again = Condition("Ready", "True", "KeyPairVerified", "signing key found")
    [entry] = render([again], _status(*before), generation=2, now=NOW)
    assert entry["lastTransitionTime"] == "2025-03-01T08:00:00Z"
    assert entry["reason"] == "KeyPairVerified"
    assert entry["message"] == "signing key found"
    assert entry["observedGeneration"] == 2


def test_a_changed_status_sets_the_transition_time() -> None:
    before = render([READY], None, generation=1, now=EARLIER)
    [entry] = render([NOT_READY], _status(*before), generation=1, now=NOW)
    assert entry["status"] == "False"
    assert entry["lastTransitionTime"] == "2025-03-02T09:30:15Z"
    [back] = render([READY], _status(entry), generation=1, now=NOW + datetime.timedelta(hours=1))
    assert back["lastTransitionTime"] == "2025-03-02T10:30:15Z"


def test_a_previous_condition_without_a_time_gets_one() -> None:
    current = {"conditions": [{"type": "Ready", "status": "True"}]}
    [entry] = render([READY], current, generation=None, now=NOW)
    assert entry["lastTransitionTime"] == "2025-03-02T09:30:15Z"


def test_conditions_are_matched_by_type() -> None:
    current = _status(
        {"type": "Issuing", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"},
        "not a condition",  # whatever someone wrote there, it is skipped
        {"type": "Ready", "status": "False", "lastTransitionTime": "2025-02-01T00:00:00Z"},
    )
    issuing = Condition("Issuing", "True", "Renewing", "renewal time reached")
    rendered = render([READY, issuing], current, generation=7, now=NOW)
    assert [(c["type"], c["lastTransitionTime"]) for c in rendered] == [
        ("Ready", "2025-03-02T09:30:15Z"),  # False -> True
        ("Issuing", "2025-01-01T00:00:00Z"),  # True -> True
    ]
    assert conditions.find(current, "Ready") == current["conditions"][2]
    assert conditions.find(current, "Missing") is None
    assert conditions.find(None, "Ready") is None


def test_observed_generation_is_left_out_without_a_generation() -> None:
    [entry] = render([READY], None, generation=None, now=NOW)
    assert "observedGeneration" not in entry
    [entry] = render([READY], None, generation=0, now=NOW)
    assert entry["observedGeneration"] == 0


# -- writing only what is new -------------------------------------------------------------------


def _wanted(current: dict[str, Any] | None, now: datetime.datetime) -> dict[str, Any]:
    """What a Certificate's successful pass wants its status to be."""
    return {
        "conditions": render([READY], current, generation=3, now=now),
        "notAfter": "2026-03-01T08:00:00Z",
        "revision": 2,
        "lastFailureTime": None,
        "failedIssuanceAttempts": None,
    }


def test_a_status_that_says_nothing_new_is_not_written() -> None:
    """A restart: the same pass over the status it wrote before, a day later."""
    first = _wanted(None, EARLIER)
    patch = status_patch(None, first)
    assert patch == {
        "conditions": first["conditions"],
        "notAfter": "2026-03-01T08:00:00Z",
        "revision": 2,
    }
    # What the API server keeps: the merge patch applied, nulls dropped.
    stored = {k: v for k, v in patch.items() if v is not None}
    assert status_patch(stored, _wanted(stored, NOW)) is None


def test_only_changed_fields_are_in_the_patch() -> None:
    stored = {k: v for k, v in _wanted(None, EARLIER).items() if v is not None}
    stored["observedSomething"] = "kept"  # a field the pass does not speak about stays
    wanted = {**_wanted(stored, NOW), "revision": 3}
    assert status_patch(stored, wanted) == {"revision": 3}


def test_a_none_field_removes_it_only_when_present() -> None:
    failed = {
        "conditions": render([NOT_READY], None, generation=3, now=EARLIER),
        "lastFailureTime": "2025-03-01T08:00:00Z",
        "failedIssuanceAttempts": 2,
    }
    wanted = _wanted(failed, NOW)
    patch = status_patch(failed, wanted)
    assert patch is not None
    assert patch["lastFailureTime"] is None and patch["failedIssuanceAttempts"] is None
    assert patch["conditions"][0]["lastTransitionTime"] == "2025-03-02T09:30:15Z"
    # Once removed, asking for their removal again is no write.
    stored = {k: v for k, v in {**failed, **patch}.items() if v is not None}
    assert "lastFailureTime" not in stored
    assert status_patch(stored, _wanted(stored, NOW)) is None


def test_an_empty_status_is_like_none() -> None:
    wanted = {"revision": None, "conditions": render([READY], {}, generation=1, now=NOW)}
    assert status_patch({}, wanted) == {"conditions": wanted["conditions"]}
    assert status_patch(None, {"revision": None}) is None
