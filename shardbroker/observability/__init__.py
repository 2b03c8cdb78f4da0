"""Observability: the Prometheus collector over the shared counters, and its HTTP exposition."""
