"""Source positions as the change envelope carries them: PostgreSQL LSNs and the ``seq`` of a
binlog change (GTID sequence number and index within the transaction). Shared by the
connectors that write them and the Debezium codec that derives them from Debezium's records.
"""

from __future__ import annotations

from streams.errors import SourceError

TXN_INDEX_BITS = 20  # the low bits of a change's seq: its index within the transaction
MAX_TXN_INDEX = (1 << TXN_INDEX_BITS) - 1
MAX_GTID_SEQ = (1 << (63 - TXN_INDEX_BITS)) - 1  # the seq stays a non-negative Avro long


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` → ``'0/16B3748'`` (PostgreSQL's notation)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def change_seq(gtid_seq: int, index: int) -> int:
    """The ``seq`` of the ``index``-th row change (0-based, binlog order) of the transaction
    with GTID sequence number ``gtid_seq``: ``(gtid_seq << 20) | index``.

    Ordered by transaction, then by change within it; ``seq >> TXN_INDEX_BITS`` is the GTID
    sequence number again. An index beyond 2²⁰ − 1 (a transaction of more than a million row
    changes) is clamped: such changes share the last seq, so only the first of them per row
    would be merged — the caller warns.
    """
    if not 0 <= gtid_seq <= MAX_GTID_SEQ:
        raise SourceError(f"GTID sequence number {gtid_seq} does not fit a change seq "
                          f"(at most {MAX_GTID_SEQ}: {TXN_INDEX_BITS} bits of a signed 64-bit long hold the change index)")
    return (gtid_seq << TXN_INDEX_BITS) | min(max(index, 0), MAX_TXN_INDEX)


def snapshot_row_seq(gtid_seq: int) -> int:
    """The ``seq`` of a snapshot row read at GTID sequence number ``gtid_seq``: above every
    change of that transaction (the snapshot holds them), below every later transaction's."""
    return change_seq(gtid_seq, MAX_TXN_INDEX)
