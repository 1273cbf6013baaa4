"""HTTP only: the Runpod-compatible client API, the worker API and the operator API over a live Runtime."""
