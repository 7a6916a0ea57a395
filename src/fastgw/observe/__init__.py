"""Observing the gateway: counters plugins declare, metrics in Prometheus text, the access log."""
