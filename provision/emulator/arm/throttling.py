"""Resource Manager's request limits: a token bucket per scope (a subscription, or the tenant for requests that
name none), per security principal and per operation type, as Azure has throttled since 2024
(learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling, "Regional
throttling and token bucket algorithm"). The clock is passed in, so the arithmetic is tested without HTTP.

Not modelled: the global subscription limit (15 times a principal's, shared by every principal), which
only a test with more than 15 principals could reach.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPERATIONS = ("reads", "writes", "deletes")


@dataclass(frozen=True)
class Limit:
    bucket: int  # the most tokens a bucket holds, and what a new one starts with
    refill: float  # tokens added back per second

    def to_json(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "refill": self.refill}


# The docs' table: the same for subscription and tenant requests.
AZURE_LIMITS = {"reads": Limit(250, 25.0), "writes": Limit(200, 10.0), "deletes": Limit(200, 10.0)}


def operation(method: str) -> str:
    """The bucket a request draws on. POST counts as a write: an `az container exec` (a POST) was answered with
    x-ms-ratelimit-remaining-subscription-writes 199 (measured in a published project log, 2026), and the
    docs' Compute page reads the writes header on every non-GET request; DELETE answers carry the deletes
    header instead (recorded SDK tests, 2021)."""
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    remaining: int  # whole tokens left once this request is counted (0 when refused)
    retry_after: int  # when refused: whole seconds until a token is back, at least 1; else 0


@dataclass
class _Level:
    tokens: float
    at: float


class Buckets:
    """Every principal's buckets; thread-safe. A refused request takes no token (the docs: a request sent
    before Retry-After has elapsed "isn't processed and a new retry value is returned")."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.limits = dict(AZURE_LIMITS)
        self._levels: dict[tuple[str, str, str], _Level] = {}

    def take(self, scope: str, principal: str, kind: str) -> Verdict:
        """Count one request of `kind` (one of OPERATIONS) by `principal` in `scope`."""
        with self._lock:
            limit, now = self.limits[kind], self._clock()
            level = self._levels.setdefault((scope, principal, kind), _Level(float(limit.bucket), now))
            level.tokens = min(float(limit.bucket), level.tokens + (now - level.at) * limit.refill)
            level.at = now
            if level.tokens >= 1:
                level.tokens -= 1
                return Verdict(True, math.floor(level.tokens), 0)
            # Short of a whole token, so at least 1 second.
            return Verdict(False, 0, math.ceil((1 - level.tokens) / limit.refill))

    def configure(self, limits: dict[str, Limit]) -> dict[str, Any]:
        """Set the limits of some operation types; their buckets start again, full at the new size."""
        with self._lock:
            self.limits.update(limits)
            self._levels = {key: level for key, level in self._levels.items() if key[2] not in limits}
            return self.settings()

    def settings(self) -> dict[str, Any]:
        return {kind: self.limits[kind].to_json() for kind in OPERATIONS}

    def reset(self) -> None:
        """Azure's limits, every bucket full."""
        with self._lock:
            self.limits = dict(AZURE_LIMITS)
            self._levels.clear()


def parse_limits(body: Any, current: dict[str, Limit]) -> dict[str, Limit]:
    """`{"reads": {"bucket": 3, "refill": 0.5}, ...}` as the Limits it sets (a field left out keeps its
    `current` value), or ValueError saying what is wrong."""
    usage = 'rateLimits is {"reads"|"writes"|"deletes": {"bucket": whole number >= 1, "refill": tokens per second > 0}}'
    if not isinstance(body, dict) or not body or not set(body) <= set(OPERATIONS):
        raise ValueError(usage)
    limits = {}
    for kind, fields in body.items():
        if not isinstance(fields, dict) or not fields or not set(fields) <= {"bucket", "refill"}:
            raise ValueError(usage)
        bucket, refill = fields.get("bucket", current[kind].bucket), fields.get("refill", current[kind].refill)
        if isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1:
            raise ValueError(f"rateLimits.{kind}.bucket must be a whole number >= 1")
        if isinstance(refill, bool) or not isinstance(refill, (int, float)) or not refill > 0 or math.isinf(refill):
            raise ValueError(f"rateLimits.{kind}.refill must be a number of tokens per second > 0")
        limits[kind] = Limit(bucket, float(refill))
    return limits
