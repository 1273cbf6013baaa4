"""`python -m gpuserve.cli`: the same command as the `gpuserve` console script."""

from gpuserve.cli import main

main()
