"""Tests of gpuserve.config."""
