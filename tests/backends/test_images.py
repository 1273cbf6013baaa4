"""The pure parts of registry images: the engine's error texts sorted into problems, and pull events into progress.

The texts are what Docker Engine 20.10 answered against Debian's docker-registry 2.8 (the live
checks are in test_registry.py); the event stream has the engine's shape for a pull of two new
layers beside one the host already held.
"""

from __future__ import annotations

import pytest

from gpuserve.backends.images import ImageError, PullTracker, classify, split_ref
from gpuserve.core.startup import PullProgress


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("manifest for 127.0.0.1:43533/try/worker:v2 not found: manifest unknown: manifest unknown", "not_found"),
        ('Head "http://127.0.0.1:43533/v2/try/worker/manifests/v1": no basic auth credentials', "unauthorized"),
        ("unauthorized: authentication required", "unauthorized"),
        ('Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused', "unreachable"),
        ('Get "https://registry.invalid/v2/": dial tcp: lookup registry.invalid: no such host', "unreachable"),
        ('Get "https://10.0.0.1/v2/": http: server gave HTTP response to HTTPS client', "unreachable"),
        # Docker Hub will not tell a missing repository from one the caller may not read.
        ("pull access denied for nosuch, repository does not exist or may require 'docker login'", "not_found"),
        ("write /var/lib/docker/tmp/x: no space left on device", "failed"),
    ],
)
def test_classify_names_the_problem(message: str, problem: str) -> None:
    assert classify(message) == problem


def test_an_image_error_says_what_and_which_image() -> None:
    err = ImageError("not_found", "127.0.0.1:5000/acme/worker:v2", "manifest unknown")
    assert err.reason == "image not found (127.0.0.1:5000/acme/worker:v2)"
    assert str(err) == "image not found (127.0.0.1:5000/acme/worker:v2): manifest unknown"
    assert ImageError("unreachable", "r/x:1", "").reason == "registry unreachable (r/x:1)"
    assert ImageError("unauthorized", "r/x:1", "").reason == "unauthorized (r/x:1)"


def test_split_ref_defaults_the_tag_and_keeps_a_registry_port() -> None:
    assert split_ref("127.0.0.1:5000/acme/worker") == ("127.0.0.1:5000/acme/worker", "latest")
    assert split_ref("127.0.0.1:5000/acme/worker:v2") == ("127.0.0.1:5000/acme/worker", "v2")
    digest = "sha256:" + "a" * 64
    assert split_ref(f"acme/worker@{digest}") == ("acme/worker", digest)


def test_pull_events_become_layers_and_bytes() -> None:
    tracker = PullTracker()
    events = [
        {"status": "Pulling from acme/worker", "id": "v1"},  # the header: its id is the tag, not a layer
        {"status": "Already exists", "progressDetail": {}, "id": "base"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "code"},
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "blob"},
        {"status": "Waiting", "progressDetail": {}, "id": "blob"},
        {"status": "Downloading", "progressDetail": {"current": 100, "total": 400}, "id": "code"},
        {"status": "Downloading", "progressDetail": {"current": 1000, "total": 5000}, "id": "blob"},
    ]
    seen = [tracker.feed(e) for e in events]
    assert seen[0] is None
    assert seen[-1] == PullProgress(layers_total=3, layers_done=1, layers_cached=1, bytes_done=1100, bytes_total=5400)
    rest = [
        {"status": "Verifying Checksum", "progressDetail": {}, "id": "code"},
        {"status": "Download complete", "progressDetail": {}, "id": "code"},
        {"status": "Extracting", "progressDetail": {"current": 400, "total": 400}, "id": "code"},
        {"status": "Pull complete", "progressDetail": {}, "id": "code"},
        {"status": "Downloading", "progressDetail": {"current": 5000, "total": 5000}, "id": "blob"},
        {"status": "Download complete", "progressDetail": {}, "id": "blob"},
        {"status": "Pull complete", "progressDetail": {}, "id": "blob"},
        {"status": "Digest: sha256:" + "b" * 64},
        {"status": "Status: Downloaded newer image for acme/worker:v1"},
    ]
    for event in rest:
        tracker.feed(event)
    assert tracker.progress() == PullProgress(layers_total=3, layers_done=3, layers_cached=1, bytes_done=5400, bytes_total=5400)
