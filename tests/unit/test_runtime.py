"""When shared.runtime's memory watch starts a full collection."""

from __future__ import annotations

from shared.runtime import ResidentMemory, grew_enough

MIB = 2**20


def test_a_full_collection_waits_for_memory_to_grow_by_half() -> None:
    assert not grew_enough(119 * MIB, since=80 * MIB)
    assert grew_enough(121 * MIB, since=80 * MIB)


def test_a_small_process_waits_for_16_mib_at_least() -> None:
    assert not grew_enough(35 * MIB, since=20 * MIB)
    assert grew_enough(37 * MIB, since=20 * MIB)


def test_resident_memory_is_read_from_the_system() -> None:
    memory = ResidentMemory.of_this_process()
    assert memory is not None
    assert 10 * MIB < memory.bytes() < 4096 * MIB
