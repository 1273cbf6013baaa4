"""A load-balancing worker for the tests: a plain ASGI app under uvicorn on $PORT, steered by files in $LB_TEST_DIR.

    GET  /ping            204 for $LOAD_S seconds after start (a model loading), then 200;
                          500 while the file `sick-<worker id>` exists
    ANY  /echo            method, path, query, headers, body length and SHA-256, worker id
    GET  /gate/<name>     answers once the file `open-<name>` exists (a request held in flight)
    GET  /stream/<name>   one chunk, then waits for `open-<name>`, then a last chunk
    GET  /sleep?s=N       answers after N seconds
    GET  /exit            the process dies without answering (a crash mid-request)
    WS   /ws              echoes every message
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn

STARTED_S = time.monotonic()
LOAD_S = float(os.environ.get("LOAD_S", "0"))
FILES = Path(os.environ.get("LB_TEST_DIR", "."))
WORKER = os.environ.get("RUNPOD_POD_ID", "?")


async def _until(name: str) -> None:
    while not (FILES / f"open-{name}").exists():
        await asyncio.sleep(0.01)


async def _answer(send: Any, status: int, body: bytes = b"", ctype: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": m.get("text"), "bytes": m.get("bytes")})
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path == "/ping":
        if (FILES / f"sick-{WORKER}").exists():
            await _answer(send, 500)
        else:
            await _answer(send, 200 if time.monotonic() - STARTED_S >= LOAD_S else 204)
        return
    body = bytearray()
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    if path.startswith("/gate/"):
        await _until(path[len("/gate/"):])
    elif path.startswith("/stream/"):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        await _until(path[len("/stream/"):])
        await send({"type": "http.response.body", "body": b"data: last\n\n"})
        return
    elif path == "/exit":
        os._exit(3)
    elif path == "/sleep":
        await asyncio.sleep(float(parse_qs(scope["query_string"].decode())["s"][0]))
    info = {
        "worker": WORKER,
        "method": scope["method"],
        "path": path,
        "query": scope["query_string"].decode(),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    await _answer(send, 200, json.dumps(info).encode())


if __name__ == "__main__":
    print(f"lb_app {WORKER} listening on port {os.environ['PORT']}", flush=True)  # its log, as `gpuserve logs` shows it
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning", lifespan="off")
