"""Tests of gpuserve.sim."""
