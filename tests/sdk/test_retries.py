"""Retries: a lost answer, a throttle and a bad gateway in front of the live server."""

from __future__ import annotations

import contextlib
import time

import pytest
from countersign_sdk import APIError, Countersign, ServerError, ThrottledError

from tests.helpers import INVOICE
from tests.sdk.front import Front

pytestmark = [pytest.mark.slow]


@contextlib.contextmanager
def through_front(world, script: list, **options):
    """A client that talks to the live server through a misbehaving front."""
    with Front(world.url, script) as front, Countersign(world.api_key, front.url, **options) as cs:
        yield front, cs


def test_a_create_whose_answer_is_lost_is_retried_and_makes_one_request(world):
    with Front(world.url, ["forward-and-drop"]) as front:
        with Countersign(world.api_key, front.url, backoff=0.1) as cs:
            req = cs.requests.create(**INVOICE)
        assert [m for m, _ in front.seen] == ["POST", "POST"]

    with world.client() as cs:
        page = cs.requests.list()
    assert page.count == 1
    assert page.results[0].id == req.id


def test_429_is_retried_after_the_servers_retry_after(world):
    with through_front(world, [(429, {"Retry-After": "2"})], backoff=0.1) as (_, cs):
        started = time.monotonic()
        req = cs.requests.create(**INVOICE)
        took = time.monotonic() - started
    assert req.status == "pending"
    assert 2.0 <= took < 6.0


def test_429_without_retries_left_raises_throttled_with_retry_after(world):
    script = [(429, {"Retry-After": "7"})]
    with (
        through_front(world, script, max_retries=0) as (_, cs),
        pytest.raises(ThrottledError) as throttled,
    ):
        cs.requests.list()
    assert throttled.value.retry_after == 7.0
    assert throttled.value.code == "throttled"


def test_5xx_is_retried_with_backoff_then_raised(world):
    with through_front(world, [(502, {}), (503, {})], backoff=0.05) as (front, cs):
        assert cs.requests.list().count == 0
        assert len(front.seen) == 3
    with through_front(world, [(502, {})] * 3, backoff=0.05, max_retries=2) as (front, cs):
        with pytest.raises(ServerError) as error:
            cs.requests.list()
        assert len(front.seen) == 3
    assert error.value.status_code == 502


def test_a_wait_through_a_throttling_front_still_returns_the_decision(world):
    with world.client() as cs:
        req = cs.requests.create(**INVOICE)
    world.decide("maria", req.id, "approve")
    script = [(429, {"Retry-After": "1"}), (503, {})]
    with through_front(world, script, backoff=0.05) as (front, cs):
        assert cs.requests.wait(req.id, timeout=20).status == "approved"
        assert len(front.seen) == 3


def test_a_2xx_that_is_not_json_is_an_error_not_a_half_read_answer(world):
    with through_front(world, [(200, {})]) as (_, cs), pytest.raises(APIError) as error:
        cs.requests.list()
    assert error.value.code == "invalid_response"
