"""Status conditions as Kubernetes API conventions want them, and the one rule that keeps a
restart free of API writes: a status is only written when it says something new."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Condition:
    type: str
    status: Status
    reason: str
    message: str


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def find(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for condition in (status or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return None


def render(
    wanted: Sequence[Condition],
    current: Mapping[str, Any] | None,
    *,
    generation: int | None,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """The conditions list for `wanted`; a condition whose status did not change keeps its
    lastTransitionTime, as `kubectl wait` and people reading `describe` expect."""
    rendered = []
    for condition in wanted:
        previous = find(current, condition.type)
        since = timestamp(now)
        if previous is not None and previous.get("status") == condition.status:
            since = str(previous.get("lastTransitionTime") or since)
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        rendered.append(entry)
    return rendered


def status_patch(
    current: Mapping[str, Any] | None, wanted: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `wanted` (None-valued fields are removed), or
    None when nothing would change."""
    current = current or {}
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    patch = {k: v for k, v in patch.items() if not (v is None and k not in current)}
    return patch or None
