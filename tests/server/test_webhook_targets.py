"""Webhook targets: loopback, private and link-local addresses refused unless allowed, at submit (400) and before each POST."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from gpuserve.core.errors import ConfigError
from gpuserve.live.settings import ServerSettings
from gpuserve.live.webhook_targets import WebhookTargets
from gpuserve.live.webhooks import WebhookSender
from tests.support.live import SERVER_FAST

REFUSED = ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
           "224.0.0.1", "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1"]
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"]


def test_only_public_addresses_pass_by_default_and_listed_networks_are_added() -> None:
    default = WebhookTargets()
    for text in REFUSED:
        assert not default.address_allowed(ipaddress.ip_address(text)), text
        reason = default.refusal([text])
        assert reason is not None and f"resolves to {text}," in reason, (text, reason)
    for text in PUBLIC:
        assert default.address_allowed(ipaddress.ip_address(text)), text
    # One refused address among a name's addresses refuses it (DNS may hand out either).
    assert default.refusal(["8.8.8.8", "10.0.0.1"]) is not None and default.refusal([]) == "resolves to no address"
    allowing = WebhookTargets(["127.0.0.0/8", "10.0.0.0/8"])
    assert allowing.refusal(["127.0.0.2", "::ffff:10.9.9.9", "8.8.8.8"]) is None
    assert allowing.refusal(["192.168.0.1"]) is not None
    assert WebhookTargets.parse("ftp://x/") == "must be an http(s) URL"
    assert WebhookTargets.parse("http://:80/") == "has no host"
    target = WebhookTargets.parse("https://Example.com/hook")
    assert not isinstance(target, str) and (target.host, target.port) == ("example.com", 443)


def test_a_bad_allowed_network_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"webhook_allowed_networks .*'10\.0\.0\.0/33'"):
        ServerSettings(webhook_allowed_networks=("10.0.0.0/33",))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
def test_submit_refuses_internal_targets_with_400_naming_webhook_and_the_value(make_server, tmp_path, fast_path: bool) -> None:
    h = make_server(settings=replace(SERVER_FAST, webhook_allowed_networks=()), fast_path=fast_path)
    for route in ("run", "runsync"):
        for hook in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://169.254.169.254/latest/meta-data",
                     "http://[::1]:9/", "https://10.0.0.5/hook"):
            r = h.client.post(f"/v2/ep/{route}", json={"input": {}, "webhook": hook})
            assert r.status_code == 400, (route, hook, r.text)
            error = r.json()["error"]
            assert error.startswith("webhook ") and repr(hook) in error and "webhook_allowed_networks" in error, error
    assert h.store.count() == 0  # nothing refused was stored
    # Without a webhook, or with an allowed one, submits work as before.
    assert h.client.post("/v2/ep/run", json={"input": {}}).status_code == 200
    allowed = make_server(
        settings=replace(SERVER_FAST, webhook_allowed_networks=("127.0.0.0/8",)), fast_path=fast_path, data_dir=tmp_path / "allowing"
    )
    assert allowed.client.post("/v2/ep/run", json={"input": {}, "webhook": "http://127.0.0.1:9/x"}).status_code == 200


class _Receiver(BaseHTTPRequestHandler):
    got: ClassVar[list[tuple[str, dict[str, object]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).got.append((self.headers["Host"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _deliver(allowed: tuple[str, ...], url: str) -> list[tuple[str, int | str]]:
    """Run one delivery to the end on a fresh loop with these allowed networks; the sender's log."""
    settings = ServerSettings(webhook_allowed_networks=allowed, webhook_retry_delay_s=0.0, webhook_timeout_s=5.0)

    async def go() -> list[tuple[str, int | str]]:
        sender = WebhookSender(settings)
        try:
            await sender._deliver(url, "job-1", {"id": "job-1", "status": "COMPLETED"})
        finally:
            await sender.close()
        return list(sender.log)

    return asyncio.run(go())


def test_each_post_is_checked_again_and_goes_to_the_checked_address_with_the_host_kept() -> None:
    _Receiver.got = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    port = receiver.server_address[1]
    try:
        # Send time, no network allowed: nothing is POSTed (the target's address is checked at
        # every try, not only at submit), and the log says why.
        assert _deliver((), f"http://127.0.0.1:{port}/hook") == [("job-1", "refused")]
        assert _Receiver.got == []
        # Allowed: a name is resolved, checked, and the POST reaches that address with the name as Host.
        assert _deliver(("127.0.0.0/8", "::1/128"), f"http://localhost:{port}/hook") in (
            [("job-1", 200)],
            [("job-1", "ConnectError")] * 3,  # localhost resolved to ::1 first, where nothing listens
        )
        if _Receiver.got:
            assert _Receiver.got == [(f"localhost:{port}", {"id": "job-1", "status": "COMPLETED"})]
    finally:
        receiver.shutdown()
        receiver.server_close()
