"""A handler whose behaviour the input picks: raise, return a dict error, report progress, refresh (runpod SDK)."""

import time

import runpod


def handler(job):
    inp = job["input"]
    mode = inp.get("mode", "echo")
    if mode == "raise":
        raise ValueError("handler refused: " + str(inp.get("why", "no reason")))
    if mode == "dict_error":
        return {"error": {"code": 1}}
    if mode == "progress":
        runpod.serverless.progress_update(job, {"pct": 50})
        time.sleep(float(inp.get("hold_s", 1.0)))
        return {"done": True}
    if mode == "refresh":
        return {"refresh_worker": True, "ok": True}
    return {"echo": inp}


runpod.serverless.start({"handler": handler})
