"""A load-balancing worker in the shape of Runpod's template: a FastAPI server with /ping, /generate and /stats.

Started by gpuserve (or Runpod) with `uvicorn app:app --host 0.0.0.0 --port $PORT`. While its
fake model loads (MODEL_LOAD_S seconds, in the background), /ping answers 204, so the
platform holds requests instead of sending them here; then 200. /generate answers with JSON,
or, with `"stream": true`, with server-sent events, one token at a time as it is produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

MODEL_LOAD_S = float(os.environ.get("MODEL_LOAD_S", "2"))
TOKEN_DELAY_S = float(os.environ.get("TOKEN_DELAY_S", "0.05"))
STATE = {"ready": False, "requests": 0, "tokens": 0, "started_s": time.time()}


async def load_model() -> None:
    await asyncio.sleep(MODEL_LOAD_S)  # a real worker loads its weights here
    STATE["ready"] = True


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(load_model())  # the server answers /ping (204) while this runs
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


class Generate(BaseModel):
    prompt: str
    max_tokens: int = 16
    stream: bool = False


@app.get("/ping")
async def ping() -> Response:
    return Response(status_code=200 if STATE["ready"] else 204)


def _tokens(req: Generate) -> list[str]:
    words = req.prompt.split() or ["..."]
    return [words[i % len(words)].upper() for i in range(req.max_tokens)]


@app.post("/generate")
async def generate(req: Generate) -> Response:
    STATE["requests"] = int(STATE["requests"]) + 1
    tokens = _tokens(req)
    if not req.stream:
        await asyncio.sleep(TOKEN_DELAY_S * len(tokens))
        STATE["tokens"] = int(STATE["tokens"]) + len(tokens)
        return Response(json.dumps({"text": " ".join(tokens), "tokens": len(tokens)}), media_type="application/json")

    async def events() -> AsyncIterator[str]:
        for token in tokens:
            await asyncio.sleep(TOKEN_DELAY_S)
            STATE["tokens"] = int(STATE["tokens"]) + 1
            yield f"data: {json.dumps({'token': token})}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/stats")
async def stats() -> dict[str, object]:
    return {
        "ready": STATE["ready"],
        "requests": STATE["requests"],
        "tokens": STATE["tokens"],
        "uptime_s": round(time.time() - float(STATE["started_s"]), 3),
        "worker": os.environ.get("RUNPOD_POD_ID"),
    }
