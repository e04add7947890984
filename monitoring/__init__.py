"""Prometheus metrics, Grafana dashboards, Prometheus rules."""
