"""Shared test support: a live platform for tests, a recording worker-protocol peer, request logs and handlers."""
