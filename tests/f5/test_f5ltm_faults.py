"""provisioner.f5ltm when the BIG-IP misbehaves: tokens, 5xx, TLS, refused logins, conflicts."""

from __future__ import annotations

import asyncio

import pytest

from controller.messages import Action, Message
from extensions.provisioners.f5ltm import F5Provisioner
from tests.f5.helpers import context, make_config, message, path_of, service
from tests.simulators.f5 import F5Simulator
from tests.simulators.tlsutil import ensure_tls

pytestmark = [pytest.mark.integration, pytest.mark.f5]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_expired_token_is_renewed_and_the_message_succeeds(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service()))
    bigip.expire_tokens()

    reply = await f5.handle(message(Action.UPDATE, service(targets=(("10.0.0.5", 30080, 1),))))

    assert reply.error == ""
    assert bigip.stats.logins == 2
    assert bigip.stats.unauthorized == 1


async def test_token_is_renewed_before_it_expires(bigip, provisioner_factory):
    clock = FakeClock()
    f5 = await provisioner_factory(clock=clock)
    await f5.handle(message(Action.ADD, service()))
    clock.now += 1200 - 30  # the simulator's tokens live 1200 s: close to the end now

    reply = await f5.handle(message(Action.DELETE, service()))

    assert reply.error == ""
    assert bigip.stats.logins == 2
    assert bigip.stats.unauthorized == 0  # renewed ahead, never refused


async def test_5xx_becomes_the_error_then_the_retry_succeeds(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    bigip.faults.error_rate = 1.0
    bigip.faults.error_status = 503

    failed = await f5.handle(message(Action.ADD, service()))

    assert failed.error.startswith("provisioner.f5ltm: BIG-IP answered 503")
    assert "admin" not in failed.error.replace("/mgmt", "")

    bigip.faults.error_rate = 0.0
    healed = await f5.handle(message(Action.ADD, service()))

    assert healed.error == ""
    assert path_of() in bigip.state.virtuals


class FirstCallFails:
    """In place of the simulator's random source: the first draw injects a fault, none after."""

    def __init__(self) -> None:
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return 0.0 if self.draws == 1 else 1.0


async def test_a_busy_answer_to_a_read_is_asked_again_not_a_failed_step(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    bigip._random = FirstCallFails()  # type: ignore[assignment]
    bigip.faults.error_rate = 0.5  # the plan's first read gets a 503

    reply = await f5.handle(message(Action.ADD, service()))

    assert bigip.stats.errors_injected == 1
    assert reply.error == ""
    assert path_of() in bigip.state.virtuals


async def test_flaky_appliance_converges(bigip, provisioner_factory):
    """Some answers fail at random: each retry goes further, and the end state is complete."""
    f5 = await provisioner_factory(update_mode="policy")
    bigip.faults.error_rate = 0.3
    svc = service(targets=(("10.0.0.1", 30080, 1), ("10.0.0.2", 30080, 1), ("10.0.0.3", 30080, 1)))
    for _ in range(30):
        if (await f5.handle(message(Action.ADD, svc))).error == "":
            break
    bigip.faults.error_rate = 0.0

    assert (await f5.handle(message(Action.ADD, svc))).error == ""
    assert len(bigip.state.members[path_of()]) == 3
    assert bigip.state.drafts() == []


async def test_appliance_down_is_an_error_naming_the_endpoint(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    bigip.faults.down = True

    reply = await f5.handle(message(Action.ADD, service()))

    assert bigip.url in reply.error
    bigip.faults.down = False
    assert (await f5.handle(message(Action.ADD, service()))).error == ""


async def test_destination_conflict_says_who_holds_it_and_never_names_the_other_service(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    await f5.handle(message(Action.ADD, service("shop/web")))

    reply = await f5.handle(message(Action.ADD, service("shop/other")))  # same public IP and port

    assert "destination 192.0.2.10:80 is already used by a virtual server of another Service" in reply.error
    assert "web" not in reply.error  # the appliance's text names the other virtual server: not passed on


async def test_wrong_ca_fails_start_with_a_clear_tls_error(bigip, tmp_path):
    other_ca = ensure_tls(tmp_path / "other").ca_file
    f5 = F5Provisioner(make_config(bigip, ca_file=str(other_ca)), context())

    with pytest.raises(RuntimeError) as caught:
        await f5.setup()

    text = str(caught.value)
    assert "TLS certificate" in text and "could not be verified" in text and "caFile" in text
    assert bigip.stats.logins == 0


async def test_system_cas_do_not_trust_the_simulator(bigip):
    f5 = F5Provisioner(make_config(bigip, ca_file=""), context())

    with pytest.raises(RuntimeError, match="could not be verified"):
        await f5.setup()


async def test_refused_login_fails_start_without_the_password(bigip):
    f5 = F5Provisioner(make_config(bigip, password="s3cret-wrong"), context())

    with pytest.raises(RuntimeError) as caught:
        await f5.setup()

    assert "login as 'admin' refused" in str(caught.value)
    assert "s3cret-wrong" not in str(caught.value)
    assert "s3cret-wrong" not in repr(f5.config)


async def test_unreachable_endpoint_fails_start(sim_tls):
    simulator = F5Simulator(tls=sim_tls)
    await simulator.start()
    url = simulator.url
    await simulator.stop()
    f5 = F5Provisioner(make_config(simulator, http_endpoint=url), context())

    with pytest.raises(RuntimeError, match="cannot connect"):
        await f5.setup()


async def test_runs_through_the_extension_contract(bigip):
    """start(receive, send) answers every message on the send queue, errors included; stop() ends it."""
    f5 = F5Provisioner(make_config(bigip), context())
    receive: asyncio.Queue[Message] = asyncio.Queue()
    send: asyncio.Queue[Message] = asyncio.Queue()
    runner = asyncio.create_task(f5.start(receive, send))
    await f5.wait_ready()

    await receive.put(message(Action.ADD, service()))
    added = await asyncio.wait_for(send.get(), 30)
    await receive.put(message(Action.ADD, service(public_ip="")))
    failed = await asyncio.wait_for(send.get(), 30)
    await receive.put(message(Action.DELETE, service()))
    deleted = await asyncio.wait_for(send.get(), 30)
    await f5.stop()
    await asyncio.wait_for(runner, 30)

    assert (added.error, deleted.error) == ("", "")
    assert "no public IP" in failed.error
    assert bigip.state.pools == {} and bigip.state.virtuals == {}


async def test_stopping_gives_the_token_back(bigip, provisioner_factory):
    f5 = await provisioner_factory()
    assert len(bigip.tokens) == 1

    await f5.teardown()

    assert bigip.tokens == {}


async def test_lost_answer_to_create_draft_leaves_no_draft(bigip, provisioner_factory):
    """The draft is made but the answer is a 5xx (as after a timeout): the draft is still cleaned up."""
    f5 = await provisioner_factory(update_mode="policy")
    original = bigip._create_draft

    def create_then_fail(request, policy):
        original(request, policy)
        from tests.simulators.f5 import F5Error

        raise F5Error(503, "Service Unavailable", api_error=1)

    bigip._create_draft = create_then_fail  # type: ignore[method-assign]

    reply = await f5.handle(message(Action.ADD, service()))

    assert "503" in reply.error
    assert bigip.state.drafts() == []
