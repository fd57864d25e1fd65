"""The emulated Resource Manager's token buckets, on a clock the test moves."""

from __future__ import annotations

import pytest

from provision.emulator.arm.throttling import AZURE_LIMITS, Buckets, Limit, operation, parse_limits

SUB = "subscription/00000000-0000-0000-0000-000000000001"
ME, OTHER = "oid-me", "oid-other"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def buckets(clock: Clock) -> Buckets:
    return Buckets(clock)


def test_azures_limits_are_the_documented_ones() -> None:
    assert {"reads": Limit(250, 25.0), "writes": Limit(200, 10.0), "deletes": Limit(200, 10.0)} == AZURE_LIMITS


@pytest.mark.parametrize(
    ("method", "kind"),
    [("GET", "reads"), ("HEAD", "reads"), ("PUT", "writes"), ("PATCH", "writes"), ("POST", "writes")]
    + [("DELETE", "deletes"), ("get", "reads")],
)
def test_each_method_draws_on_its_operation_types_bucket(method: str, kind: str) -> None:
    assert operation(method) == kind


def test_a_full_bucket_serves_its_size_then_refuses(buckets: Buckets) -> None:
    remaining = [buckets.take(SUB, ME, "reads").remaining for _ in range(250)]
    assert remaining == list(range(249, -1, -1))  # 249 after the first, as Azure reports it
    refused = buckets.take(SUB, ME, "reads")
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 1)


def test_a_refused_request_takes_no_token(buckets: Buckets, clock: Clock) -> None:
    buckets.configure({"writes": Limit(1, 0.5)})
    assert buckets.take(SUB, ME, "writes").allowed
    assert [buckets.take(SUB, ME, "writes").retry_after for _ in range(3)] == [2, 2, 2]
    clock.now += 2
    assert buckets.take(SUB, ME, "writes").allowed


def test_refill_brings_tokens_back_up_to_the_bucket_size(buckets: Buckets, clock: Clock) -> None:
    buckets.configure({"reads": Limit(3, 1.0)})
    for _ in range(3):
        assert buckets.take(SUB, ME, "reads").allowed
    assert not buckets.take(SUB, ME, "reads").allowed
    clock.now += 1.5
    assert buckets.take(SUB, ME, "reads").remaining == 0  # 1.5 tokens back, one taken
    assert buckets.take(SUB, ME, "reads").retry_after == 1  # half a token at one a second
    clock.now += 3600
    assert buckets.take(SUB, ME, "reads").remaining == 2  # never more than the bucket holds


def test_retry_after_is_the_whole_seconds_until_a_token_is_back(buckets: Buckets, clock: Clock) -> None:
    buckets.configure({"deletes": Limit(1, 0.01)})
    buckets.take(SUB, ME, "deletes")
    assert buckets.take(SUB, ME, "deletes").retry_after == 100
    clock.now += 99.5
    assert buckets.take(SUB, ME, "deletes").retry_after == 1


def test_operation_types_principals_and_scopes_have_buckets_of_their_own(buckets: Buckets) -> None:
    buckets.configure({kind: Limit(1, 0.01) for kind in ("reads", "writes", "deletes")})
    assert buckets.take(SUB, ME, "reads").allowed
    assert not buckets.take(SUB, ME, "reads").allowed
    assert buckets.take(SUB, ME, "writes").allowed
    assert buckets.take(SUB, ME, "deletes").allowed
    assert buckets.take(SUB, OTHER, "reads").allowed
    assert buckets.take("tenant/t", ME, "reads").allowed
    assert not buckets.take(SUB, ME, "writes").allowed


def test_configure_starts_those_buckets_again_full(buckets: Buckets) -> None:
    for _ in range(5):
        buckets.take(SUB, ME, "reads")
        buckets.take(SUB, ME, "writes")
    assert buckets.configure({"reads": Limit(300, 0.01)})["reads"] == {"bucket": 300, "refill": 0.01}
    assert buckets.take(SUB, ME, "reads").remaining == 299
    assert buckets.take(SUB, ME, "writes").remaining == 194  # untouched


def test_reset_restores_azures_limits_and_fills_the_buckets(buckets: Buckets) -> None:
    buckets.configure({"reads": Limit(1, 0.01)})
    buckets.take(SUB, ME, "reads")
    buckets.reset()
    assert buckets.limits == AZURE_LIMITS
    assert buckets.take(SUB, ME, "reads").remaining == 249


def test_parse_limits_keeps_the_fields_left_out() -> None:
    assert parse_limits({"reads": {"bucket": 3}, "writes": {"refill": 2}}, AZURE_LIMITS) == {
        "reads": Limit(3, 25.0),
        "writes": Limit(200, 2.0),
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "rateLimits is"),
        ({}, "rateLimits is"),
        ({"lists": {"bucket": 3}}, "rateLimits is"),
        ({"reads": 3}, "rateLimits is"),
        ({"reads": {}}, "rateLimits is"),
        ({"reads": {"bucket": 3, "burst": 1}}, "rateLimits is"),
        ({"reads": {"bucket": 0}}, "rateLimits.reads.bucket must be a whole number >= 1"),
        ({"reads": {"bucket": 2.5}}, "rateLimits.reads.bucket must be a whole number >= 1"),
        ({"reads": {"bucket": True}}, "rateLimits.reads.bucket must be a whole number >= 1"),
        ({"writes": {"refill": 0}}, "rateLimits.writes.refill must be a number of tokens per second > 0"),
        ({"writes": {"refill": -1}}, "rateLimits.writes.refill must be a number"),
        ({"writes": {"refill": "1"}}, "rateLimits.writes.refill must be a number"),
        ({"writes": {"refill": float("nan")}}, "rateLimits.writes.refill must be a number"),
        ({"deletes": {"refill": float("inf")}}, "rateLimits.deletes.refill must be a number"),
    ],
)
def test_parse_limits_refuses_bad_limits(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        parse_limits(body, AZURE_LIMITS)
