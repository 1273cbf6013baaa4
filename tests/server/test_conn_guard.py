"""What conn_guard.py relies on in uvicorn's private httptools protocol, beyond what corked.py does (test_corked.py).

conn_guard.py overrides the protocol's parser callbacks and connection methods, re-implements
`data_received` (uvicorn's, plus the header count), and reads the request cycle's and the flow
control's state. A uvicorn release may change any of that; these tests name what changed.
"""

from __future__ import annotations

import importlib
import inspect

from gpuserve.server.conn_guard import GuardedHttpProtocol, guarded_protocol
from gpuserve.server.corked import CorkedHttpToolsProtocol
from gpuserve.server.limits import HttpLimits

MODULE = importlib.import_module("uvicorn.protocols.http.httptools_impl")
FLOW = importlib.import_module("uvicorn.protocols.http.flow_control")

OVERRIDDEN = {
    "connection_made": ["self", "transport"],
    "connection_lost": ["self", "exc"],
    "data_received": ["self", "data"],
    "on_message_begin": ["self"],
    "on_header": ["self", "name", "value"],
    "on_headers_complete": ["self"],
    "on_body": ["self", "body"],
    "on_message_complete": ["self"],
    "handle_websocket_upgrade": ["self"],
}


def test_the_overridden_methods_keep_their_signatures() -> None:
    base = MODULE.HttpToolsProtocol
    assert GuardedHttpProtocol.__mro__[1] is CorkedHttpToolsProtocol
    for name, params in OVERRIDDEN.items():
        assert list(inspect.signature(getattr(base, name)).parameters) == params, name
    mine = {n for n, v in vars(GuardedHttpProtocol).items() if callable(v) and not n.startswith("_") and n in dir(base)}
    assert mine == set(OVERRIDDEN), mine


def test_data_received_is_still_what_conn_guard_copies() -> None:
    source = inspect.getsource(MODULE.HttpToolsProtocol.data_received)
    for part in ("_unset_keepalive_if_required()", "self.parser.feed_data(data)", "httptools.HttpParserError",
                 "httptools.HttpParserUpgrade", "self._should_upgrade()", "self.handle_websocket_upgrade()",
                 "self._unsupported_upgrade_warning()", "self.send_400_response(msg)"):
        assert part in source, f"uvicorn's data_received no longer has {part!r}; conn_guard.py re-implements it"


def test_the_state_conn_guard_reads_is_still_there() -> None:
    cycle = inspect.getsource(MODULE.RequestResponseCycle.__init__)
    for attr in ("disconnected", "message_event", "response_started", "response_complete", "waiting_for_100_continue"):
        assert f"self.{attr} =" in cycle, attr
    assert "self.read_paused =" in inspect.getsource(FLOW.FlowControl.__init__)
    protocol = inspect.getsource(MODULE.HttpToolsProtocol)
    for attr in ("self.client =", "self.cycle", "self.flow =", "self.headers =", "self.loop ="):
        assert attr in protocol, attr


def test_each_server_gets_its_own_counts() -> None:
    a, b = guarded_protocol(HttpLimits()), guarded_protocol(HttpLimits(max_headers=5))
    assert a.per_client is not b.per_client and a.open_connections is not b.open_connections
    assert b.limits.max_headers == 5 and issubclass(a, GuardedHttpProtocol)
