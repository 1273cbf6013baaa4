"""The live control plane: Runpod-compatible client API, worker API, and the live worker registry."""
