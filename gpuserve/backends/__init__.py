"""Backends: where workers live (fake for controller tests, local processes, Docker containers)."""
