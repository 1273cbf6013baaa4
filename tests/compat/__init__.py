"""Tests of gpuserve.compat."""
