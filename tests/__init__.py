"""gpuserve test suite."""
