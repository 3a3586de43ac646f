"""The Kafka sink picks partitions exactly as the Java client's default partitioner does."""

from __future__ import annotations

import random

import pytest
from aiokafka import partitioner
from aiokafka.partitioner import DefaultPartitioner

from bridge.sinks import kafka
from bridge.sinks.kafka import default_partition, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Apache Kafka).
JAVA_MURMUR2 = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize(("key", "expected"), JAVA_MURMUR2)
def test_murmur2_matches_the_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) & 0xFFFFFFFF == expected & 0xFFFFFFFF  # aiokafka returns the unsigned form


def test_partition_is_the_positive_hash_modulo_the_partition_count() -> None:
    # -973932308 & 0x7fffffff = 1173551340
    assert default_partition(b"21", 6) == 1173551340 % 6
    assert default_partition(b"foobar", 1) == 0


def test_partitions_agree_with_another_client_for_every_key_length_and_byte_value() -> None:
    rng = random.Random(5)
    partitioner = DefaultPartitioner()
    for length in range(0, 40):
        for _ in range(25):
            key = bytes(rng.randrange(256) for _ in range(length))
            for count in (1, 3, 6, 64):
                assert default_partition(key, count) == partitioner(key, list(range(count)), [])


def test_conid_keys_spread_over_all_partitions() -> None:
    used = {default_partition(str(conid).encode(), 6) for conid in range(265_598, 265_698)}
    assert used == set(range(6))


def test_the_sink_uses_aiokafkas_murmur2_not_a_copy_of_its_own() -> None:
    assert kafka.murmur2 is partitioner.murmur2
