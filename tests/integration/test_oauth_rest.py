"""The bridge's OAuth REST client against the simulator's Web API mode, in one event loop: the live
session token is requested, replaced before it expires and regenerated after a 401."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.errors import GatewayUnavailable
from bridge.gateway.oauth import OAuthConsumer, load_key_set
from bridge.gateway.rest import GatewayRest, RestSettings
from bridge.sim.server import GatewaySimulator
from tests.fixtures.sim import FAST_CONFIG


@dataclass
class Clock:
    """Wall time plus an offset the test moves forward."""

    offset_ns: int = 0

    def __call__(self) -> int:
        return time.time_ns() + self.offset_ns


@dataclass
class OAuthRig:
    sim: GatewaySimulator
    rest: GatewayRest
    consumer: OAuthConsumer
    clock: Clock


@pytest_asyncio.fixture
async def rig(tmp_path: Path) -> AsyncIterator[OAuthRig]:
    config = replace(FAST_CONFIG, oauth_dir=tmp_path / "keys", lst_ttl_s=100.0)
    async with GatewaySimulator(config) as sim:
        assert sim.oauth_file is not None and sim.cert_file is not None
        clock = Clock()
        consumer = OAuthConsumer(load_key_set(sim.oauth_file), clock_ns=clock)
        rest = GatewayRest(RestSettings(base_url=sim.base_url, ca_file=str(sim.cert_file)), consumer)
        try:
            yield OAuthRig(sim, rest, consumer, clock)
        finally:
            await rest.close()


def oauth_stats(rig: OAuthRig) -> dict[str, object]:
    assert rig.sim.gateway.oauth is not None
    return rig.sim.gateway.oauth.stats()


async def test_the_first_call_obtains_a_live_session_token_and_later_calls_reuse_it(rig: OAuthRig) -> None:
    tickle = await rig.rest.tickle()
    assert tickle.session_id == rig.sim.gateway.session_id
    assert not (await rig.rest.auth_status()).authenticated  # no brokerage session before ssodh/init
    assert (await rig.rest.ssodh_init()).authenticated
    assert (await rig.rest.account_list())[0] == ["DU1234567"]
    assert oauth_stats(rig)["lsts_issued"] == 1
    assert oauth_stats(rig)["signed_requests"] == 4
    assert oauth_stats(rig)["refused"] == {}


async def test_the_token_is_replaced_before_it_expires(rig: OAuthRig) -> None:
    await rig.rest.tickle()
    first = rig.consumer.lst
    assert first is not None
    rig.clock.offset_ns = 89 * 1_000_000_000  # 89 s of a 100 s token: still more than 10 % left
    await rig.rest.tickle()
    assert rig.consumer.lst is first
    rig.clock.offset_ns = 91 * 1_000_000_000  # within the last 10 %
    await rig.rest.tickle()
    assert rig.consumer.lst is not first
    assert oauth_stats(rig)["lsts_issued"] == 2
    assert oauth_stats(rig)["refused"] == {}  # replaced, never refused
    assert rig.consumer.rejections == 0


async def test_a_401_regenerates_the_token_and_the_call_succeeds(rig: OAuthRig) -> None:
    await rig.rest.tickle()
    await rig.sim.apply_fault("lst_expire")
    tickle = await rig.rest.tickle()
    assert tickle.session_id == rig.sim.gateway.session_id
    assert oauth_stats(rig)["refused"] == {"live session token expired": 1}
    assert oauth_stats(rig)["lsts_issued"] == 2
    assert rig.consumer.rejections == 1


async def test_a_consumer_the_server_does_not_know_fails_retryably_and_names_the_reason(
    rig: OAuthRig, tmp_path: Path
) -> None:
    keys = replace(rig.consumer.keys, consumer_key="FORGEDKEY")
    rest = GatewayRest(RestSettings(base_url=rig.sim.base_url, ca_file=str(rig.sim.cert_file)), OAuthConsumer(keys))
    try:
        with pytest.raises(GatewayUnavailable, match="invalid consumer"):
            await rest.tickle()
    finally:
        await rest.close()
    assert oauth_stats(rig)["refused"] == {"invalid consumer": 1}


async def test_a_tls_certificate_that_is_not_trusted_is_refused(rig: OAuthRig) -> None:
    rest = GatewayRest(RestSettings(base_url=rig.sim.base_url), rig.consumer)  # system CAs only
    try:
        with pytest.raises(GatewayUnavailable, match="certificate"):
            await rest.tickle()
    finally:
        await rest.close()


async def test_calls_refused_together_obtain_one_new_token(rig: OAuthRig) -> None:
    await rig.rest.tickle()
    await rig.sim.apply_fault("lst_expire")
    await asyncio.gather(rig.rest.tickle(), rig.rest.auth_status(), rig.rest.tickle())
    assert oauth_stats(rig)["lsts_issued"] == 2
    assert rig.consumer.rejections == 3
