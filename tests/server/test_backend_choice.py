"""`gpuserve serve --backend`: the name picks the worker backend; a bad name is a clear error."""

from __future__ import annotations

import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.platform import backend_factory, process_backend


def test_process_is_the_embedded_default() -> None:
    assert backend_factory("process") is process_backend


def test_docker_name_gives_a_docker_factory() -> None:
    factory = backend_factory("docker")
    assert callable(factory) and factory is not process_backend


def test_unknown_backend_names_the_flag_and_value() -> None:
    with pytest.raises(ConfigError, match=r"--backend must be 'process', 'docker' or 'ray', was 'k8s'"):
        backend_factory("k8s")
