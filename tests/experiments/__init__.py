"""Tests of gpuserve.experiments."""
