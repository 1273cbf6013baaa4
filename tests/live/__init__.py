"""Tests of gpuserve.live."""
