"""Tests of gpuserve.fidelity."""
