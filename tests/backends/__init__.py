"""Tests of gpuserve.backends."""
