"""The provider contract: one behaviour suite that every provider passes.

Each test runs once per registered provider (and ``memory``) whose driver can stage
what it needs (see ``drivers.py``), through the provider's public interface against
its fake service. What only one protocol does (payload mapping, VAPID, HTTP/2, token
refresh...) is tested in that provider's own module.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest

from flask_push.errors import PayloadError
from flask_push.message import DeliveryResult, Notification, OutgoingPush
from flask_push.providers import REGISTRY, provider_class

from conftest import deliver, run_provider, send_batch
from drivers import (
    DRIVERS,
    GONE,
    HOLD,
    LIMIT,
    OTHER_TARGET,
    REFUSAL,
    RETRY,
    UNREACHABLE,
    Driver,
    for_providers,
    push,
    says,
)

STATUSES = {"sent", "gone", "retry", "failed"}


@pytest.fixture
def driver(request: pytest.FixtureRequest) -> Driver:
    return DRIVERS[request.param].make(request)


def test_every_registered_provider_is_in_the_suite() -> None:
    assert set(REGISTRY) | {"memory"} == set(DRIVERS)


@for_providers()
def test_registered_and_built_without_io(driver: Driver) -> None:
    cls = provider_class(driver.path)
    provider = driver.provider()
    assert cls is driver.provider_type and type(provider) is cls and cls.name == driver.kind
    assert driver.delivered() == 0
    if driver.fake is not None:
        assert driver.touched() == 0


@for_providers()
def test_a_batch_is_sent_with_one_result_per_push_in_order(driver: Driver) -> None:
    pushes = [push(driver.target(), n) for n in range(20)]

    results = send_batch(driver.provider(), pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert {(r.status, r.provider, r.status_code, r.error) for r in results} == {
        ("sent", driver.kind, driver.sent_status, None)
    }
    assert driver.delivered() == 20


@for_providers(GONE)
def test_a_dead_target_is_gone(driver: Driver) -> None:
    dead, alive = driver.target(), driver.target()
    driver.kill(dead)

    gone, sent = send_batch(driver.provider(), [push(dead, 0), push(alive, 1)])

    assert (gone.status, gone.status_code) == ("gone", driver.gone_status)
    assert says(gone.error, driver.gone_says)
    assert sent.status == "sent" and driver.delivered() == 1


@for_providers(RETRY)
@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, 30), (500, None), (502, None), (503, None), (503, 7), (504, None)],
)
def test_rate_limits_and_server_errors_are_retried_once_asked(
    driver: Driver, status: int, retry_after: int | None
) -> None:
    busy, fine = driver.target(), driver.target()
    driver.fail_next(status, retry_after=retry_after, target=busy)

    later, sent = send_batch(driver.provider(), [push(busy, 0), push(fine, 1)])

    assert (later.status, later.status_code) == ("retry", status)
    assert later.retry_after == (retry_after if driver.retry_after else None)
    assert says(later.error, driver.retry_says(status))
    # The provider hands the push back at once: it neither sleeps nor tries again.
    assert sent.status == "sent"
    assert driver.attempts() == 2 and driver.delivered() == 1


@for_providers(REFUSAL)
def test_a_payload_the_service_refuses_as_too_large_fails(driver: Driver) -> None:
    driver.refuse_too_large()

    [result] = send_batch(driver.provider(), [push(driver.target())])

    assert (result.status, result.status_code) == ("failed", driver.too_large_status)
    # one reason for every provider: its sentence gives the provider's limit
    assert result.reason == "too_large"
    assert says(result.error, driver.too_large_says)
    assert driver.attempts() == 1 and driver.delivered() == 0


@for_providers(LIMIT)
def test_check_refuses_what_is_too_large_before_anything_is_sent(driver: Driver) -> None:
    provider = driver.provider()
    limit = provider.max_payload
    room = limit - provider.payload_size(Notification(title="T", body="b"))
    largest = Notification(title="T", body="b" * (1 + room))
    assert provider.payload_size(largest) == limit
    provider.check(largest)

    with pytest.raises(PayloadError, match=f"{limit + 1} bytes; the limit is {limit}") as error:
        provider.check(Notification(title="T", body="b" * (2 + room)))
    assert error.value.provider == driver.kind
    # Multi-byte characters count as the bytes they take.
    with pytest.raises(PayloadError):
        provider.check(Notification(title="T", body="é" * ((1 + room) // 2 + 1)))
    assert driver.attempts() == 0

    # The largest one check lets through is delivered.
    biggest = OutgoingPush("dlv_big", "m" * 40, largest, driver.target(), click_token="c" * 160)
    assert [r.status for r in send_batch(provider, [biggest])] == ["sent"]


@for_providers(OTHER_TARGET, GONE, RETRY)
def test_results_keep_their_order_whatever_happens(driver: Driver) -> None:
    good, dead, busy = driver.target(), driver.target(), driver.target()
    driver.kill(dead)
    driver.fail_next(503, target=busy)
    pushes = [
        push(good, 0),
        push(dead, 1),
        push(driver.other_target(), 2),
        push(busy, 3),
        push(good, 4),
    ]

    results = send_batch(driver.provider(), pushes)

    assert [r.delivery_id for r in results] == [p.delivery_id for p in pushes]
    assert [r.status for r in results] == ["sent", "gone", "failed", "retry", "sent"]
    assert says(results[2].error, driver.other_target_says)
    assert driver.attempts() == 4  # the target of another kind was never sent


@for_providers(HOLD)
def test_no_answer_in_time_is_retried_without_waiting_for_it(driver: Driver) -> None:
    assert driver.fake is not None
    provider = driver.provider(timeout=0.2)
    driver.fake.hold()
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(send_batch, provider, [push(driver.target())])
        try:
            # It returns (and closes) while the service still holds the request:
            # nobody waited for the answer. (A provider that waited would hang here.)
            [result] = sending.result(timeout=30)
            assert driver.delivered() == 0
        finally:
            driver.fake.release()
    assert result.status == "retry"
    if result.reason == "unreachable":
        # a loaded machine took more than the connect's share of the 0.2 s to make
        # the connection (or fetch FCM's token): not sent, and not waited for either
        assert result.error
    else:
        assert result.reason == "no_answer"
        assert result.error is not None and "0.2" in result.error


@for_providers(HOLD)
def test_concurrency_bounds_the_requests_in_flight(driver: Driver) -> None:
    fake = driver.fake
    assert fake is not None
    pushes = [push(driver.target(), n) for n in range(6)]
    provider = driver.provider(concurrency=2)
    # the provider's bound, whole: here every push goes to one push service, whose
    # own share (a lane) may be smaller (Web Push's is half)
    provider.lane_concurrency = 2
    fake.hold()
    with ThreadPoolExecutor(1) as pool:
        sending = pool.submit(send_batch, provider, pushes)
        try:
            # Answered one at a time: each answer lets one more request in, no more.
            for answered in range(1, len(pushes) - 1):
                fake.wait_in_flight(2)
                fake.release(1)
                fake.wait(answered)
        finally:
            fake.release()
        results = sending.result()
    assert [r.status for r in results] == ["sent"] * 6
    assert fake.peak_in_flight == 2


@for_providers(UNREACHABLE)
def test_a_service_that_stopped_is_retried(driver: Driver) -> None:
    assert driver.fake is not None
    provider = driver.provider()
    target = driver.target()

    async def work() -> list[DeliveryResult]:
        results = await deliver(provider, [push(target, 0)])  # connected, and pooled
        await asyncio.to_thread(driver.fake.stop)  # type: ignore[union-attr]
        # on the pooled connection it hung up, then on a new one it refuses
        results += await deliver(provider, [push(target, 1)])
        return results + await deliver(provider, [push(target, 2)])

    sent, broken, refused = run_provider(provider, work)
    assert sent.status == "sent"
    assert (broken.status, refused.status) == ("retry", "retry")
    assert broken.error and says(refused.error, driver.unreachable_says)
    # no answer came: the timeline says it could not be reached, not what it answered
    assert (broken.reason, refused.reason) == ("unreachable", "unreachable")


@for_providers(UNREACHABLE)
def test_a_push_python_would_not_start_at_exit_goes_again(driver: Driver) -> None:
    """Python 3.12.0 to 3.12.2 start no thread (a resolver's) while the interpreter
    exits: not the push's fault, so not a failure for good."""
    one = push(driver.target(), 7)
    error = RuntimeError("can't create new thread at interpreter shutdown")
    result = driver.provider().parse(one, error)
    assert (result.status, result.reason) == ("retry", "unreachable")
    assert result.error == (
        "this process was exiting and could not connect (can't create new thread at "
        "interpreter shutdown)"
    )


@for_providers()
def test_parse_makes_a_result_of_any_exception(driver: Driver) -> None:
    one = push(driver.target(), 7)
    result = driver.provider().parse(one, ValueError("odd"))
    assert (result.delivery_id, result.status) == ("dlv_7", "failed")
    assert result.error is not None and "odd" in result.error
    assert result.status in STATUSES


@for_providers()
def test_aclose_releases_everything_and_the_provider_reopens(driver: Driver) -> None:
    provider = driver.provider()
    target = driver.target()

    async def work() -> list[str]:
        first = await deliver(provider, [push(target, 0)])
        await provider.aclose()
        second = await deliver(provider, [push(target, 1)])  # reopened on demand
        await provider.aclose()
        await provider.aclose()  # twice is fine
        return [r.status for r in first + second]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_provider(provider, work) == ["sent", "sent"]
        run_provider(driver.provider(), lambda: _nothing())  # closing one never used is fine too
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert driver.delivered() == 2


async def _nothing() -> None:
    return None
