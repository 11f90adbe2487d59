"""The web dashboard and Prometheus metrics, served by the broker on its own port
(docs/dashboard.md)."""
