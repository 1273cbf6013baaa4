"""Tests of gpuserve.policies."""
