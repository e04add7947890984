"""Erasure of one enterprise's rows from the analytics store (``yurong erase``, docs/security.md
"Data lifecycle").

Every table keyed by USCC loses the enterprise's rows with a synchronous mutation
(``ALTER TABLE … DELETE … SETTINGS mutations_sync = 2``): the parts holding them are rewritten
without them before the call returns, unlike a lightweight ``DELETE FROM``, which only masks rows
until a later merge. The table names are the fixed ``ERASABLE`` tuple and the USCC a bound
parameter: no SQL is built from the request.

Not here: ``dlq_event`` has no USCC column (dead-letter metadata, never the values; its rows age
out by ``YURONG_RETENTION_DLQ_EVENT_DAYS``), and ``sql_audit`` records analysts' queries.
"""

from __future__ import annotations

import logging

from clickhouse_connect.driver.client import Client

from streams.core.consent import check_uscc

log = logging.getLogger(__name__)

# every table of schema.sql with a ``uscc`` column holding an enterprise's data
ERASABLE = ("enterprise_profile", "enterprise_profile_history", "enterprise_event", "risk_change", "alert_delivery")


def erase_enterprise(client: Client, uscc: str) -> dict[str, int]:
    """Delete every row of ``uscc`` from the ``ERASABLE`` tables of the client's database;
    ``{table: rows erased}`` (stored rows, every version counted, before merges collapse them)."""
    uscc = check_uscc(uscc)
    erased: dict[str, int] = {}
    for table in ERASABLE:
        params = {"t": table, "uscc": uscc}
        rows = int(client.query("SELECT count() FROM {t:Identifier} WHERE uscc = {uscc:String}",
                                parameters=params).result_rows[0][0])
        if rows:
            client.command("ALTER TABLE {t:Identifier} DELETE WHERE uscc = {uscc:String} SETTINGS mutations_sync = 2",
                           parameters=params)
        erased[table] = rows
        log.info("erased %d row(s) of %s from %s", rows, uscc, table)
    return erased
