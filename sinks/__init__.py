"""Sinks: ClickHouse schema and batch writers; Redis stores (consent, watchlists, alert dedup)."""
