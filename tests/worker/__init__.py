"""Tests of gpuserve.worker."""
