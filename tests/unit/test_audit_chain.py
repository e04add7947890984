"""The SQL audit's hash chain, as pure logic: what verify() accepts and what it reports."""

from __future__ import annotations

from sinks.analyst.audit import COLUMNS, GENESIS, row_hash, verify

DAY = 86_400_000
NOW = 1_800_000_000_000


def chain(n: int, start_seq: int = 1, start_ts: int = NOW - 10 * DAY, prev: str = GENESIS) -> list[dict]:
    rows = []
    for i in range(n):
        row = {c: "" for c in COLUMNS}
        row.update(chain="c1", seq=start_seq + i, ts=start_ts + i * 1000, principal=f"a{i % 3}", role="analyst",
                   query=f"SELECT {i}", outcome="ok", rows_read=i, bytes_read=0, rows_returned=1, elapsed_ms=3,
                   prev_hash=prev)
        row["hash"] = row_hash(row)
        prev = row["hash"]
        rows.append(row)
    return rows


def test_an_untouched_chain_is_intact():
    (rep,) = verify(chain(50), NOW, 365).values()
    assert rep.ok and rep.rows == 50 and (rep.first_seq, rep.last_seq) == (1, 50)


def test_an_edited_row_is_found():
    rows = chain(10)
    rows[4]["principal"] = "somebody-else"
    (rep,) = verify(rows, NOW, 365).values()
    assert rep.problems == ["row 5 was altered after it was written (its hash does not match its content)"]


def test_a_deleted_row_is_found():
    rows = chain(10)
    del rows[6]
    (rep,) = verify(rows, NOW, 365).values()
    assert "rows 7..7 are missing (deleted)" in rep.problems
    assert "row 8 does not follow row 6: the chain was cut or rewritten" in rep.problems


def test_rows_that_expired_by_the_ttl_are_not_a_gap_but_recent_ones_are():
    old = chain(5, start_ts=NOW - 400 * DAY)
    assert verify(old[2:], NOW, 365)["c1"].ok  # rows 1-2 are older than the retention
    recent = chain(5)
    assert verify(recent[2:], NOW, 365)["c1"].problems == [
        "rows 1..2 are missing and were not old enough to have expired"]


def test_a_cut_chain_is_found_against_a_head_noted_earlier():
    rows = chain(10)
    noted = ("c1", 10, rows[-1]["hash"])
    assert verify(rows, NOW, 365, noted)["c1"].ok
    (rep,) = verify(rows[:7], NOW, 365, noted).values()
    assert rep.problems == ["row 10, noted earlier as the head, is gone (the chain ends at 7): the newest rows were removed"]


def test_a_rewritten_head_is_found():
    rows = chain(10)
    noted = ("c1", 10, rows[-1]["hash"])
    forged = chain(10)
    forged[9]["query"] = "SELECT 'nothing to see'"
    forged[9]["hash"] = row_hash(forged[9])  # consistent with itself, but not the head noted
    assert "row 10 is not the row noted as the head earlier (its hash differs)" in verify(forged, NOW, 365, noted)["c1"].problems
