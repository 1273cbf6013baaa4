"""Tests of gpuserve.core."""
