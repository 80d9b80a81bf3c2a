"""Exporting snapshots to monitoring systems: Prometheus exposition text, the textfile collector, /metrics."""
