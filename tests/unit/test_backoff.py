from __future__ import annotations

import random

import pytest

from bridge.backoff import Backoff, BackoffPolicy

S = 1_000_000_000


def test_delays_stay_between_floor_and_cap_and_grow_with_failures() -> None:
    policy = BackoffPolicy(floor_s=0.5, cap_s=30.0, healthy_reset_s=10.0)
    backoff = Backoff(policy, random.Random(7))
    delays = [backoff.next_delay_s() for _ in range(50)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert delays[0] == 0.5
    assert max(delays[10:]) > 10.0


def test_ceiling_doubles_from_the_floor_until_the_cap() -> None:
    policy = BackoffPolicy(floor_s=1.0, cap_s=30.0)
    assert [policy.ceiling_s(n) for n in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.ceiling_s(10_000) == 30.0


def test_jitter_is_uniform_over_the_whole_range_not_clustered_at_the_ceiling() -> None:
    policy = BackoffPolicy(floor_s=1.0, cap_s=30.0)
    rng = random.Random(1)
    samples = [policy.delay_s(8, rng) for _ in range(2000)]
    assert min(samples) < 5.0
    assert max(samples) > 25.0


def test_failures_reset_only_after_a_full_healthy_period() -> None:
    backoff = Backoff(BackoffPolicy(floor_s=1.0, cap_s=30.0, healthy_reset_s=10.0), random.Random(0))
    for _ in range(5):
        backoff.next_delay_s()
    backoff.healthy(100 * S)
    backoff.healthy(105 * S)
    assert backoff.failures == 5
    backoff.healthy(110 * S)
    assert backoff.failures == 0


def test_a_peer_that_accepts_and_drops_at_once_never_resets_the_backoff() -> None:
    backoff = Backoff(BackoffPolicy(floor_s=1.0, cap_s=30.0, healthy_reset_s=10.0), random.Random(0))
    now = 0
    for _ in range(20):
        backoff.healthy(now)
        now += 2 * S
        backoff.healthy(now)
        backoff.next_delay_s()
        now += 1 * S
    assert backoff.failures == 20


def test_an_unhealthy_moment_restarts_the_healthy_period() -> None:
    backoff = Backoff(BackoffPolicy(floor_s=1.0, cap_s=30.0, healthy_reset_s=10.0), random.Random(0))
    backoff.next_delay_s()
    backoff.healthy(0)
    backoff.unhealthy()
    backoff.healthy(9 * S)
    backoff.healthy(15 * S)
    assert backoff.failures == 1


def test_the_no_delay_policy_never_waits() -> None:
    backoff = Backoff(BackoffPolicy.no_delay(), random.Random(0))
    assert {backoff.next_delay_s() for _ in range(20)} == {0.0}


@pytest.mark.parametrize(
    ("floor_s", "cap_s", "multiplier"), [(-1.0, 30.0, 2.0), (5.0, 1.0, 2.0), (1.0, 30.0, 0.5)]
)
def test_an_impossible_policy_is_refused(floor_s: float, cap_s: float, multiplier: float) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(floor_s=floor_s, cap_s=cap_s, multiplier=multiplier)
