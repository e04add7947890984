"""Which partition a key lands in: Kafka's default (murmur2) partitioner, in Python.

Records keyed by USCC (``enterprise.events``, ``enterprise.profiles``, ``risk.changes``,
``alerts.<bank>``, ``control.erasures*``) are produced with librdkafka's ``murmur2_random``, as the
Java client does; ``yurong erase`` and the sink use this to find the one partition of each topic
that holds an enterprise's records.
"""

from __future__ import annotations


def murmur2_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default (murmur2) partitioner picks for ``key``: what librdkafka's
    ``murmur2_random`` and the Java client do (``Utils.murmur2``, ``toPositive``)."""
    m, length = 0x5BD1E995, len(key)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(key[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = key[length - length % 4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return (h & 0x7FFFFFFF) % partitions
