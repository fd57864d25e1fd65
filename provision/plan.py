"""What a command found and did: actions with reasons, rendered for people (text) or pipelines (JSON).

Every step reads the current state, decides on an Action (noop, create, update, delete, ...) with a
reason, and applies it unless --dry-run. The dry run is the same code path with the write skipped,
so the Result of a dry run lists exactly the writes a real run would make."""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import Any

from provision.errors import ExitStatus, Interrupted, ProvisionError


@dataclass
class Action:
    verb: str  # noop | create | update | attach | detach | delete | grant | ...
    target: str  # what it acts on, for people: "identity myManagedIdentity", "role myuser"
    reason: str  # why: "already attached", "missing", "tags differ"
    request: dict[str, Any] | None = None  # the write, for --dry-run: {"method","url","body"} or {"sql": [...]}

    @property
    def changes(self) -> bool:
        return self.verb != "noop"

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action": self.verb, "target": self.target, "reason": self.reason}
        if self.request is not None:
            data["request"] = self.request
        return data


@dataclass
class Result:
    dry_run: bool = False
    actions: list[Action] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # resource fields: id, clientId, role, ...
    warnings: list[str] = field(default_factory=list)

    def add(self, action: Action) -> Action:
        self.actions.append(action)
        return action

    @property
    def changed(self) -> bool:
        return any(action.changes for action in self.actions)

    @property
    def exit_status(self) -> ExitStatus:
        if self.dry_run and self.changed:
            return ExitStatus.PENDING_CHANGES
        return ExitStatus.SUCCESS

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"changed": self.changed}
        if self.dry_run:
            data["dryRun"] = True
        data["actions"] = [action.as_dict() for action in self.actions]
        data.update(self.fields)
        if self.warnings:
            data["warnings"] = self.warnings
        return data

    def render(self, output: str) -> str:
        if output == "json":
            return json.dumps(self.as_dict(), indent=2)
        lines = []
        for action in self.actions:
            prefix = "would " + action.verb if self.dry_run and action.changes else action.verb
            lines.append(f"{prefix}: {action.target} ({action.reason})")
            if self.dry_run and action.request is not None:
                lines.extend("  " + line for line in _render_request(action.request))
        width = max((len(key) for key in self.fields), default=0)
        lines.extend(f"{key.ljust(width)}  {_text(value)}" for key, value in self.fields.items())
        return "\n".join(lines)


@dataclass(frozen=True)
class Failure:
    """Why a command failed: one `error:` line (and its hint) for people, on stderr; one JSON object for
    pipelines, on stdout. Secrets are redacted from both."""

    code: str
    message: str
    hint: str | None
    exit_status: int
    outcome: str | None = None  # "unknown": a write was sent and may have been made

    @classmethod
    def of(cls, error: ProvisionError) -> Failure:
        from provision.logs import redact

        hint = redact(error.hint) if error.hint else None
        return cls(error.code, redact(error.message), hint, int(error.exit_status), error.outcome)

    @classmethod
    def interrupted(cls, error: Interrupted) -> Failure:
        message = f"interrupted ({signal.Signals(error.signum).name})"
        if error.during is None:
            return cls("Interrupted", message, None, error.exit_status)
        message += (
            f" while {error.during}: Azure or PostgreSQL carries on with what it accepted, so the change may"
            " have been made; a re-run will show it"
        )
        return cls("Interrupted", message, None, error.exit_status, "unknown")

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "changed": False,
            "error": {"code": self.code, "message": self.message, "hint": self.hint},
            "exitStatus": self.exit_status,
        }
        if self.outcome is not None:
            data["outcome"] = self.outcome
        return data

    def render(self, output: str) -> str:
        if output == "json":
            return json.dumps(self.as_dict(), indent=2)
        return f"error: {self.message}" + (f"\n{self.hint}" if self.hint else "")


def _render_request(request: dict[str, Any]) -> list[str]:
    if "sql" in request:
        return list(request["sql"])
    lines = [f"{request['method']} {request['url']}"]
    if request.get("headers"):
        lines.extend(f"{name}: {value}" for name, value in request["headers"].items())
    if request.get("body") is not None:
        lines.extend(json.dumps(request["body"], indent=2).splitlines())
    return lines


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_text(v)}" for k, v in value.items()) or "-"
    if value is None:
        return "-"
    return str(value)
