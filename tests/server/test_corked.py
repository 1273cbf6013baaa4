"""What corked.py relies on in uvicorn's private httptools protocol, and that a real server sends each response in one write.

corked.py subclasses `uvicorn.protocols.http.httptools_impl.HttpToolsProtocol`, overrides
`connection_made(transport)` to hand it a `_CorkedTransport`, reads `self.loop`, and counts on
every write of a response going through the transport given to `connection_made`. A uvicorn
release may change any of that without notice; these tests name what changed, and pyproject.toml
caps uvicorn until they pass on a newer one.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import re
import socket
import threading
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn

from gpuserve.server.corked import CorkedHttpToolsProtocol, _CorkedTransport
from tests.support.live import KEY

PRIVATE_MODULE = "uvicorn.protocols.http.httptools_impl"
UVICORN = importlib.metadata.version("uvicorn")

# Every transport method uvicorn's httptools protocol (and the helpers it hands the transport to)
# called when corked.py was written. _CorkedTransport handles the ones that write or close
# (write, close, set_protocol) and delegates the rest; a new call may bypass the pending writes.
KNOWN_TRANSPORT_CALLS = {"write", "close", "is_closing", "set_protocol", "get_extra_info", "pause_reading", "resume_reading"}
TRANSPORT_USERS = [PRIVATE_MODULE, "uvicorn.protocols.http.flow_control", "uvicorn.protocols.utils"]


def _private_class() -> type:
    try:
        module = importlib.import_module(PRIVATE_MODULE)
    except ImportError as exc:
        pytest.fail(f"uvicorn {UVICORN} has no module {PRIVATE_MODULE} ({exc}); corked.py subclasses a class in it")
    cls = getattr(module, "HttpToolsProtocol", None)
    if not isinstance(cls, type):
        pytest.fail(f"uvicorn {UVICORN}: {PRIVATE_MODULE}.HttpToolsProtocol is gone (found {cls!r}); corked.py subclasses it")
    return cls


def test_installed_uvicorn_is_within_the_pin():
    requirements = pytest.importorskip("packaging.requirements")
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    pins = [
        requirements.Requirement(r) for r in pyproject["project"]["optional-dependencies"]["server"] if r.startswith("uvicorn")
    ]
    assert len(pins) == 1, pins
    spec = pins[0].specifier
    assert any(s.operator == "<" for s in spec), f"the uvicorn requirement {pins[0]} has no upper bound"
    assert spec.contains(UVICORN), f"installed uvicorn {UVICORN} is outside the pin {pins[0]}"


def test_the_private_protocol_class_is_still_there_and_subclassed():
    cls = _private_class()
    assert issubclass(cls, asyncio.Protocol), f"uvicorn {UVICORN}: HttpToolsProtocol is no longer an asyncio.Protocol"
    assert CorkedHttpToolsProtocol.__mro__[1] is cls
    # Only connection_made is overridden; anything more would need its own check here.
    overridden = {name for name in vars(CorkedHttpToolsProtocol) if not name.startswith("__")}
    assert overridden == {"connection_made"}, overridden


def test_connection_made_still_takes_just_the_transport():
    cls = _private_class()
    method = getattr(cls, "connection_made", None)
    assert callable(method), f"uvicorn {UVICORN}: HttpToolsProtocol.connection_made is gone; corked.py overrides it"
    params = list(inspect.signature(method).parameters)
    assert params == ["self", "transport"], (
        f"uvicorn {UVICORN}: HttpToolsProtocol.connection_made{inspect.signature(method)} changed; "
        "corked.py overrides it as connection_made(self, transport)"
    )


def test_the_protocol_sets_self_loop_when_uvicorn_builds_it():
    # Built the way uvicorn.Server.serve's create_protocol builds it (keywords included).
    from uvicorn.server import ServerState

    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover - never called
        raise AssertionError

    config = uvicorn.Config(app, http=CorkedHttpToolsProtocol, lifespan="off", log_level="warning")
    config.load()
    assert config.http_protocol_class is CorkedHttpToolsProtocol, (
        f"uvicorn {UVICORN}: Config(http=<class>) no longer uses the class (got {config.http_protocol_class!r})"
    )
    loop = asyncio.new_event_loop()
    try:
        protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        assert getattr(protocol, "loop", None) is loop, (
            f"uvicorn {UVICORN}: HttpToolsProtocol no longer keeps its event loop in self.loop; "
            "corked.py's connection_made reads it"
        )
    finally:
        loop.close()


def test_uvicorn_calls_no_transport_method_the_cork_does_not_know():
    found: set[str] = set()
    for name in TRANSPORT_USERS:
        source = inspect.getsource(importlib.import_module(name))
        found |= set(re.findall(r"transport\.([a-z_]+)\(", source))
    new = found - KNOWN_TRANSPORT_CALLS
    assert not new, (
        f"uvicorn {UVICORN} now calls transport.{', transport.'.join(sorted(new))}(); check that _CorkedTransport "
        "flushes its pending writes before it (write-like and closing calls must), then add it to KNOWN_TRANSPORT_CALLS"
    )
    for name in ("write", "writelines", "close", "write_eof", "set_protocol", "get_write_buffer_size"):
        assert name in vars(_CorkedTransport), f"_CorkedTransport must handle {name} itself, not delegate it"


# -- through a real server ---------------------------------------------------------------------


def _write_syscalls(thread_id: int) -> int:
    """write(2)-family calls made by one thread so far; uvloop writes sockets with write/writev."""
    with open(f"/proc/self/task/{thread_id}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise AssertionError("no syscw line")


def _get(sock: socket.socket, path: str, authorization: str = "") -> bytes:
    """One GET on a kept-alive connection, read to the end of its body."""
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n{auth}\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _fewest_writes(thread_id: int, sock: socket.socket, path: str, authorization: str = "", tries: int = 5) -> int:
    """The fewest writes one response took; other work on the thread can only add writes, never remove them."""
    counts = []
    for _ in range(tries):
        before = _write_syscalls(thread_id)
        _get(sock, path, authorization)
        counts.append(_write_syscalls(thread_id) - before)
    return min(counts)


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def _uncorked_writes_per_response() -> int:
    """The control: uvicorn's own httptools protocol, on a plain ASGI app, writes start and body separately."""

    async def app(scope: dict, receive: object, send: object) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"12")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b'{"ok": true}'})  # type: ignore[operator]

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", loop="uvloop", lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the control server did not start"
            time.sleep(0.01)
        assert thread.native_id is not None
        host, port = sock.getsockname()
        with _connect(f"http://{host}:{port}") as conn:
            return _fewest_writes(thread.native_id, conn, "/")
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_a_real_server_sends_each_response_in_one_write(make_server):
    h = make_server()
    server = h.platform._server  # the ServerThread: its thread runs the event loop, its uvicorn server the protocols
    thread_id = server._thread.native_id
    assert thread_id is not None
    try:
        _write_syscalls(thread_id)
    except OSError as exc:
        pytest.skip(f"per-thread I/O counters are not readable here ({exc})")
    control = _uncorked_writes_per_response()
    if control == 0:
        pytest.skip("this kernel does not count socket writes in syscw")
    assert control == 2, f"uvicorn {UVICORN}'s own protocol took {control} writes per response; corked.py may be moot"

    with _connect(h.url) as conn:
        # A fast-path route, a FastAPI route and FastAPI's own 404: each answer is one write.
        for path, auth in [("/v2/nope/status/x", ""), ("/v2/ep/health", f"Bearer {KEY}"), ("/nowhere", "")]:
            assert _fewest_writes(thread_id, conn, path, auth) == 1, path
        # And the connection is served by the corked protocol (under the limits of conn_guard.py) over the corked transport.
        connections = list(server._server.server_state.connections)
        assert connections and all(isinstance(c, CorkedHttpToolsProtocol) for c in connections), connections
        assert all(isinstance(c.transport, _CorkedTransport) for c in connections)
        assert all(c.loop is h.rt.loop for c in connections)
