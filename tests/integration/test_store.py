from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from shared.model import PaymentStatus
from shared.store import PaymentStore, StatusChange
from tests.conftest import RunningPart


async def test_reserve_creates_one_pending_record_even_when_raced(store: PaymentStore) -> None:
    reserved = await asyncio.gather(
        *(store.reserve("ride-1", "user-1", 2550, "usd") for _ in range(20))
    )
    assert {payment.version for payment in reserved} == {1}
    assert all(payment.status is PaymentStatus.PENDING for payment in reserved)
    assert all(payment.stripe_session_id is None for payment in reserved)


async def test_unique_index_on_ride_id(store: PaymentStore) -> None:
    await store.reserve("ride-1", "user-1", 100, "usd")
    collection = store._payments  # the index itself is what is under test
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one({"rideId": "ride-1"})


async def test_session_is_attached_once(store: PaymentStore) -> None:
    reserved = await store.reserve("ride-1", "user-1", 100, "usd")
    first = await store.attach_session(reserved, "cs_1", "https://pay/1")
    second = await store.attach_session(reserved, "cs_2", "https://pay/2")
    assert (first.stripe_session_id, first.payment_url, first.version) == (
        "cs_1",
        "https://pay/1",
        2,
    )
    assert second == first
    assert await store.find({"rideId": "ride-1"}) == first


async def test_a_session_is_attached_after_a_change_made_meanwhile(store: PaymentStore) -> None:
    reserved = await store.reserve("ride-1", "user-1", 100, "usd")
    await store.apply({"rideId": "ride-1"}, StatusChange(PaymentStatus.FAILED, "evt_1", "test"))
    attached = await store.attach_session(reserved, "cs_1", "https://pay/1")
    assert (attached.stripe_session_id, attached.status, attached.version) == (
        "cs_1",
        PaymentStatus.FAILED,
        3,
    )


async def test_transitions_follow_the_rules_and_apply_each_event_once(store: PaymentStore) -> None:
    reserved = await store.reserve("ride-1", "user-1", 100, "usd")
    await store.attach_session(reserved, "cs_1", "https://pay/1")
    by_session = {"stripeSessionId": "cs_1"}

    failed = await store.apply(by_session, StatusChange(PaymentStatus.FAILED, "evt_1", "test"))
    assert failed is not None and failed.status is PaymentStatus.FAILED and failed.version == 3
    assert (
        await store.apply(by_session, StatusChange(PaymentStatus.FAILED, "evt_2", "test")) is None
    )
    succeeded = await store.apply(
        by_session, StatusChange(PaymentStatus.SUCCEEDED, "evt_3", "test", "pi_1")
    )
    assert (
        succeeded is not None and succeeded.payment_intent_id == "pi_1" and succeeded.version == 4
    )
    for final_breaker in (PaymentStatus.FAILED, PaymentStatus.EXPIRED, PaymentStatus.CANCELED):
        assert await store.apply(by_session, StatusChange(final_breaker, "evt_x", "test")) is None

    document = await store.find_document("ride-1")
    assert document is not None
    assert [entry["status"] for entry in document["history"]] == ["pending", "failed", "succeeded"]
    assert [entry["eventId"] for entry in document["history"]] == [None, "evt_1", "evt_3"]


async def test_an_event_id_already_applied_is_refused(store: PaymentStore) -> None:
    await store.reserve("ride-1", "user-1", 100, "usd")
    selector = {"rideId": "ride-1"}
    assert await store.apply(selector, StatusChange(PaymentStatus.FAILED, "evt_1", "test"))
    # failed -> succeeded is allowed, but not by the very event that made it fail
    assert (
        await store.apply(selector, StatusChange(PaymentStatus.SUCCEEDED, "evt_1", "test")) is None
    )


async def test_concurrent_conflicting_changes_have_one_winner(store: PaymentStore) -> None:
    await store.reserve("ride-1", "user-1", 100, "usd")
    selector = {"rideId": "ride-1"}
    changes = [StatusChange(PaymentStatus.SUCCEEDED, f"evt_s{i}", "test") for i in range(10)]
    changes += [StatusChange(PaymentStatus.EXPIRED, f"evt_e{i}", "test") for i in range(10)]
    results = await asyncio.gather(*(store.apply(selector, change) for change in changes))
    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    final = await store.find(selector)
    assert final is not None and final.status is winners[0].status and final.version == 2


async def test_reservations_raced_by_two_processes_make_one_record_each(
    store: PaymentStore, mongo: RunningPart, unique: str
) -> None:
    """Two clients (as two consumer processes) reserve the same rides in concurrent batches."""
    other = PaymentStore.connect(mongo.url, f"test-{unique}", "payments")
    rides = [f"ride-{index}" for index in range(50)]
    try:
        reserved = await asyncio.gather(
            *(s.reserve(ride, "user-1", 100, "usd") for ride in rides for s in (store, other))
        )
    finally:
        await other.close()
    assert [payment.ride_id for payment in reserved] == [ride for ride in rides for _ in (1, 2)]
    assert {(payment.version, payment.status) for payment in reserved} == {
        (1, PaymentStatus.PENDING)
    }
    assert await store._payments.count_documents({}) == 50


async def test_a_batch_of_reservations_returns_existing_records_as_they_are(
    store: PaymentStore,
) -> None:
    attached = await store.attach_session(
        await store.reserve("ride-old", "user-1", 100, "usd"), "cs_old", "https://pay/old"
    )
    old, new = await asyncio.gather(
        store.reserve("ride-old", "user-1", 100, "usd"),
        store.reserve("ride-new", "user-2", 200, "usd"),
    )
    assert old == attached
    assert (new.ride_id, new.user_id, new.amount, new.version) == ("ride-new", "user-2", 200, 1)


async def test_a_batch_of_attachments_with_one_record_changed_meanwhile(
    store: PaymentStore,
) -> None:
    reserved = await asyncio.gather(
        *(store.reserve(f"ride-{index}", "user-1", 100, "usd") for index in range(3))
    )
    await store.apply({"rideId": "ride-1"}, StatusChange(PaymentStatus.FAILED, "evt_1", "test"))
    attached = await asyncio.gather(
        *(store.attach_session(p, f"cs_{p.ride_id}", f"https://pay/{p.ride_id}") for p in reserved)
    )
    assert [(p.stripe_session_id, p.status, p.version) for p in attached] == [
        ("cs_ride-0", PaymentStatus.PENDING, 2),
        ("cs_ride-1", PaymentStatus.FAILED, 3),
        ("cs_ride-2", PaymentStatus.PENDING, 2),
    ]
    for payment in attached:
        assert await store.find({"rideId": payment.ride_id}) == payment


async def test_writes_wait_for_a_majority_and_scans_read_committed_data(
    store: PaymentStore,
) -> None:
    assert store._payments.write_concern == WriteConcern(w="majority")
    assert store._committed.read_concern == ReadConcern("majority")
    assert store.lease("any", "me", 1)._leases.write_concern == WriteConcern(w="majority")
