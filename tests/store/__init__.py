"""Tests of gpuserve.store."""
