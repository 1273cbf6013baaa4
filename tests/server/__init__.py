"""Tests of gpuserve.server."""
