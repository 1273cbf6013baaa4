"""The replay's client: a separate process that submits each job at its scheduled time over the Runpod client API.

    python -m gpuserve.fidelity.client PLAN.json OUT.jsonl
It prints `ready` once loaded; stdin then gets one line `URL T0` (the server's URL and the wall-clock instant of scenario time 0)
once the server is up; PLAN.json holds {"api_key", "jobs": [[endpoint id, at_s, service_s], ...]}
with times already divided by the speedup. Each submission is written to OUT.jsonl as
{"i", "job_id", "at_s", "sent_s"} (sent_s: wall clock just before the POST).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

LAG_THREADS = 8  # late submissions (a burst) go out in parallel instead of queueing behind each other


def main(argv: list[str]) -> int:
    plan_path, out_path = argv[0], argv[1]
    with open(plan_path) as f:
        plan = json.load(f)
    print("ready", flush=True)  # imports done: the driver may now fix time 0
    line = sys.stdin.readline().split()
    url, t0 = line[0], float(line[1])
    headers = {"Authorization": f"Bearer {plan['api_key']}"}
    jobs: list[list[Any]] = plan["jobs"]
    limits = httpx.Limits(max_connections=LAG_THREADS, max_keepalive_connections=LAG_THREADS)
    with httpx.Client(base_url=f"{url}/v2", headers=headers, timeout=60.0, limits=limits) as http, open(
        out_path, "w"
    ) as out, ThreadPoolExecutor(LAG_THREADS) as pool:

        def submit(i: int, eid: str, at_s: float, service_s: float) -> str:
            sent = time.time()
            r = http.post(f"/{eid}/run", json={"input": {"service_s": service_s, "i": i}})
            r.raise_for_status()
            return json.dumps({"i": i, "job_id": r.json()["id"], "at_s": at_s, "sent_s": sent})

        futures = []
        for i, (eid, at_s, service_s) in enumerate(jobs):
            delay = t0 + at_s - time.time()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(submit, i, eid, at_s, service_s))
        for fut in futures:
            out.write(fut.result() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
