"""The analysts' SQL gateway's cost per query, beside the same query on a bare chDB session.

    .venv/bin/python -m bench.gateway_bench [--profiles 20000] [--queries 300]

No stack needed: one embedded chDB store in a temporary folder, seeded with ``--profiles``
profile rows. For each of three typical analyst queries (a point lookup by USCC, an aggregate
over every profile, a join of profiles and events), ``--queries`` runs:

- **baseline** — the query on a plain chDB session of the same store, in this process;
- **gateway** — the query as `yurong sql` sends it: HTTP to the gateway, the bearer token
  checked (scrypt once, then cached), the query parsed by the engine and checked against the
  role's allowlists, run on a read-only limited session, the audit row hash-chained and inserted.

Reported: per-query latency p50/p95 of each and the ratio gateway / baseline, with the split of
the gateway's time (parse + check, run, audit) from the audit itself. Results:
``bench/results/gateway-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import clickhouse_connect
from rich.table import Table

from bench.pipeline_bench import console, machine_facts
from connectors.simulator.identities import make_uscc
from sinks.analyst import open_gateway, serve
from sinks.analyst.credentials import CredentialStore
from sinks.clickhouse import ClickHouseWriter, apply_schema, open_client
from sinks.rows import profile_row
from streams.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
QUERIES = {
    "point lookup": ("SELECT uscc, status, risk_score, risk_level FROM enterprise_profile FINAL WHERE uscc = {u:String}",
                     True),
    "aggregate": ("SELECT risk_level, count(), round(avg(risk_score)) FROM enterprise_profile FINAL "
                  "GROUP BY risk_level ORDER BY risk_level", False),
    "join": ("SELECT p.risk_level, count(e.event_id) FROM enterprise_profile AS p FINAL "
             "LEFT JOIN enterprise_event AS e ON e.uscc = p.uscc GROUP BY p.risk_level", False),
}


def _profile(uscc: str, i: int) -> dict:
    return {
        "uscc": uscc, "name": None, "status": "active", "district_code": "500103", "industry_code": "C3011",
        "registered_capital": 100.0, "established_date": "2018-05-01", "legal_rep_pseudonym": f"p1_{i:032x}",
        "legal_rep_id_masked": "5001**********123X", "legal_rep_name_masked": "李*", "legal_rep_phone_masked": None,
        "address_masked": None, "abnormal_open_ids": [], "abnormal_listings_total": 0, "risk_score": 500 + i % 400,
        "indicators": {}, "ratings": {}, "score_factors": [], "risk_level": "ABCDE"[i % 5], "reason_codes": [],
        "version": i, "last_event_id": f"e{i}", "last_event_ts_ms": 1_767_225_600_000, "updated_ts_ms": 1_767_225_600_000,
    }


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    rng = random.Random(7)
    usccs = sorted({make_uscc(rng, "500103") for _ in range(args.profiles)})
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        dsn = f"chdb://{Path(tmp) / 'chdb'}"
        os.environ.update({"YURONG_HOME": str(home), "YURONG_CLICKHOUSE_DSN": dsn, "YURONG_ANALYST_AUDIT_CHAIN": "bench",
                           "YURONG_ANALYST_QUOTA_QUERIES_PER_HOUR": str(10 * args.queries * len(QUERIES))})
        settings = Settings()
        token = CredentialStore(settings.analyst.credentials_path(home)).add("bench", "analyst")
        client = open_client(dsn, "yurong")
        apply_schema(client, settings.retention)
        writer = ClickHouseWriter(client)
        writer.write("enterprise_profile", [profile_row(_profile(u, i)) for i, u in enumerate(usccs)], "bench")
        gateway = open_gateway(settings, client, writer.lock)
        port = 0
        server = serve(gateway, "127.0.0.1", port)
        port = server.server_address[1]
        bare = clickhouse_connect.get_client(dsn=dsn)
        bare.database = "yurong"
        results: dict[str, dict] = {}
        try:
            for name, (sql, point) in QUERIES.items():
                base, via = [], []
                for i in range(args.queries):
                    params = {"u": usccs[i % len(usccs)]} if point else {}
                    t = time.perf_counter()
                    assert bare.query(sql, parameters=params or None).result_rows is not None
                    base.append(time.perf_counter() - t)
                    body = json.dumps({"sql": sql, "parameters": params}).encode()
                    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=body, method="POST",
                                                 headers={"Content-Type": "application/json",
                                                          "Authorization": f"Bearer {token}"})
                    t = time.perf_counter()
                    with urllib.request.urlopen(req, timeout=60) as resp:
                        resp.read()
                    via.append(time.perf_counter() - t)
                parse = []
                for _ in range(50):
                    t = time.perf_counter()
                    gateway.parser.parse(sql)
                    parse.append(time.perf_counter() - t)
                results[name] = {
                    "baseline_p50_ms": 1000 * statistics.median(base), "baseline_p95_ms": 1000 * pct(base, 0.95),
                    "gateway_p50_ms": 1000 * statistics.median(via), "gateway_p95_ms": 1000 * pct(via, 0.95),
                    "ratio_p50": statistics.median(via) / statistics.median(base),
                    "parse_p50_ms": 1000 * statistics.median(parse),
                }
        finally:
            server.shutdown()
            gateway.close()
            bare.close()
            client.close()
    table = Table("query", "bare chDB p50", "gateway p50", "gateway p95", "ratio p50", "parse p50")
    for name, r in results.items():
        table.add_row(name, f"{r['baseline_p50_ms']:.1f} ms", f"{r['gateway_p50_ms']:.1f} ms",
                      f"{r['gateway_p95_ms']:.1f} ms", f"{r['ratio_p50']:.2f}×", f"{r['parse_p50_ms']:.1f} ms")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway-{dt.date.today().isoformat()}.json"
    out.write_text(json.dumps({"machine": machine_facts(), "profiles": args.profiles, "queries": args.queries,
                               "results": results}, indent=2), encoding="utf-8")
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
