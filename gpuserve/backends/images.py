"""Images from a registry: pulled on a worker's first start (with progress), pushed after a build, failures named.

Credentials come from the Docker config as the docker CLI reads it ($DOCKER_CONFIG/config.json,
else ~/.docker/config.json: `auths`, `credsStore`, `credHelpers`), through the docker SDK's own
loader, read again before every pull and push, so a `docker login` made while the server runs counts.

What can go wrong is sorted into what an operator does about it (`ImageProblem`): the image is
not in the registry, the registry refused the credentials, or the registry did not answer.
The engine reports each as free text; `classify` reads it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gpuserve.core.startup import PullProgress

if TYPE_CHECKING:
    import docker as docker_sdk

__all__ = [
    "ImageError",
    "ImageProblem",
    "PullTracker",
    "classify",
    "ensure_image",
    "push_image",
    "split_ref",
]

ImageProblem = Literal["not_found", "unauthorized", "unreachable", "failed"]

# What a waiting client and `gpuserve endpoints` read: "<what> (<image>)".
_SAYS: dict[ImageProblem, str] = {
    "not_found": "image not found",
    "unauthorized": "unauthorized",
    "unreachable": "registry unreachable",
    "failed": "image pull failed",
}

# The engine's words for each problem (Docker Engine 20-28, registries per the distribution spec).
# Checked in this order: "pull access denied ... does not exist" is Docker Hub's answer for a
# missing repository, which it will not tell from one you may not read.
_PATTERNS: tuple[tuple[ImageProblem, re.Pattern[str]], ...] = (
    ("unreachable", re.compile(
        r"connection refused|no such host|dial tcp|i/o timeout|network is unreachable|no route to host"
        r"|server gave HTTP response to HTTPS client|tls: |x509: |context deadline exceeded|EOF$",
        re.IGNORECASE,
    )),
    ("not_found", re.compile(r"manifest unknown|not found|does not exist|name unknown|no such image", re.IGNORECASE)),
    ("unauthorized", re.compile(
        r"unauthorized|authentication required|no basic auth credentials|denied|forbidden|incorrect username or password",
        re.IGNORECASE,
    )),
)


def classify(message: str) -> ImageProblem:
    """Which problem the engine's error text names; "failed" when it names none of them."""
    for problem, pattern in _PATTERNS:
        if pattern.search(message):
            return problem
    return "failed"


class ImageError(RuntimeError):
    """An image could not be pulled or pushed: `problem`, the image `ref`, and the engine's `detail`."""

    def __init__(self, problem: ImageProblem, ref: str, detail: str) -> None:
        self.problem: ImageProblem = problem
        self.ref = ref
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")

    @property
    def reason(self) -> str:
        """The short cause: `image not found (REF)`, `unauthorized (REF)`, `registry unreachable (REF)`."""
        return f"{_SAYS[self.problem]} ({self.ref})"


def split_ref(ref: str) -> tuple[str, str]:
    """(repository, tag or digest) of an image reference; the tag defaults to `latest`, as docker's does."""
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(ref)
    return repository, tag or "latest"


# A layer's statuses in the engine's pull stream; other events (the header, the digest, the
# summary) carry no layer id or carry the tag as their id.
_LAYER_START = {"Pulling fs layer", "Waiting", "Already exists"}
_LAYER_DONE = {"Pull complete", "Already exists"}


@dataclass
class PullTracker:
    """Turns the engine's pull events into `PullProgress` (pure: it is fed the decoded JSON events)."""

    _layers: set[str] = field(default_factory=set)
    _done: set[str] = field(default_factory=set)
    _cached: set[str] = field(default_factory=set)
    _current: dict[str, int] = field(default_factory=dict)  # layer -> bytes downloaded
    _total: dict[str, int] = field(default_factory=dict)  # layer -> its announced size

    def feed(self, event: Mapping[str, Any]) -> PullProgress | None:
        """Account one event; the progress after it, or None when it said nothing about a layer."""
        status, layer = str(event.get("status", "")), event.get("id")
        if not isinstance(layer, str) or not (status in _LAYER_START or layer in self._layers):
            return None
        self._layers.add(layer)
        detail = event.get("progressDetail") or {}
        if status == "Downloading" and isinstance(detail, Mapping):
            current, total = detail.get("current"), detail.get("total")
            if isinstance(current, int):
                self._current[layer] = current
            if isinstance(total, int) and total > 0:
                self._total[layer] = total
        elif status in ("Download complete", "Verifying Checksum") and layer in self._total:
            self._current[layer] = self._total[layer]
        if status == "Already exists":
            self._cached.add(layer)
        if status in _LAYER_DONE:
            self._done.add(layer)
        return self.progress()

    def progress(self) -> PullProgress:
        return PullProgress(
            layers_total=len(self._layers),
            layers_done=len(self._done),
            layers_cached=len(self._cached),
            bytes_done=sum(self._current.values()),
            bytes_total=sum(self._total.values()),
        )


def _error_of(event: Mapping[str, Any]) -> str | None:
    if "error" not in event and "errorDetail" not in event:
        return None
    detail = event.get("errorDetail")
    message = detail.get("message") if isinstance(detail, Mapping) else None
    return str(message or event.get("error") or "unknown error")


def _raise_for(ref: str, exc: Exception) -> ImageError:
    """The ImageError for an exception the docker SDK raised during a pull or push."""
    import docker.errors

    if isinstance(exc, docker.errors.APIError):
        text = str(exc.explanation or exc)
        # A 404 from the engine is its registry's "manifest unknown": the image is not there.
        problem: ImageProblem = "not_found" if exc.status_code == 404 else classify(text)
        return ImageError(problem, ref, text)
    return ImageError("failed", ref, f"{type(exc).__name__}: {exc}")


def _present(client: docker_sdk.DockerClient, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def ensure_image(
    client: docker_sdk.DockerClient, ref: str, on_progress: Callable[[PullProgress], None] | None = None
) -> PullProgress | None:
    """Pull `ref` unless the engine holds it; None when it was present, else the finished pull's progress.

    `on_progress` hears every change while the pull runs (from the calling thread). Raises
    ImageError naming the problem.
    """
    if _present(client, ref):
        return None
    repository, tag = split_ref(ref)
    tracker = PullTracker()
    try:
        client.api.reload_config()  # the credentials as they are now
        events: Iterable[Mapping[str, Any]] = client.api.pull(repository, tag=tag, stream=True, decode=True)
        for event in events:
            error = _error_of(event)
            if error is not None:
                raise ImageError(classify(error), ref, error)
            progress = tracker.feed(event)
            if progress is not None and on_progress is not None:
                on_progress(progress)
    except ImageError:
        raise
    except Exception as exc:
        raise _raise_for(ref, exc) from None
    if not _present(client, ref):  # a digest pulled under another name, or an engine that said nothing
        raise ImageError("failed", ref, "the pull ended but the engine does not hold the image")
    return tracker.progress()


_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64})")


def push_image(client: docker_sdk.DockerClient, ref: str, on_event: Callable[[Mapping[str, Any]], None] | None = None) -> str:
    """Push the local image `ref` to its registry; returns the manifest digest the registry stored.

    Raises ImageError: the image is not held locally (not_found), or the registry refused
    (unauthorized) or did not answer (unreachable).
    """
    if not _present(client, ref):
        raise ImageError("not_found", ref, "no such image on this host; build or tag it first")
    repository, tag = split_ref(ref)
    digest = ""
    try:
        client.api.reload_config()
        for event in client.api.push(repository, tag=tag, stream=True, decode=True):
            error = _error_of(event)
            if error is not None:
                raise ImageError(classify(error), ref, error)
            aux = event.get("aux")
            if isinstance(aux, Mapping) and isinstance(aux.get("Digest"), str):
                digest = aux["Digest"]
            found = _DIGEST.search(str(event.get("status", "")))
            if found and not digest:
                digest = found.group(1)
            if on_event is not None:
                on_event(event)
    except ImageError:
        raise
    except Exception as exc:
        raise _raise_for(ref, exc) from None
    if not digest:
        raise ImageError("failed", ref, "the registry did not confirm the push with a digest")
    return digest
