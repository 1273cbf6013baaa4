#!/usr/bin/env bash
# Installs and starts a Docker engine when missing, then builds gpuserve's local base image.
# (Filled in by the Docker backend work; until then it only reports.)
echo "docker-setup: not yet implemented"
