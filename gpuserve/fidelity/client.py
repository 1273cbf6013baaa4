"""The replay's client: a separate process that submits each job at its scheduled time over the Runpod client API.

    python -m gpuserve.fidelity.client PLAN.json OUT.jsonl
It prints `ready` once loaded; stdin then gets one line `URL T0` (the server's URL and the wall-clock instant of scenario time 0)
once the server is up; PLAN.json holds {"api_key", "jobs": [[endpoint id, at_s, service_s], ...],
"lb": [load-balancing endpoint ids]} with times already divided by the speedup. Each submission
is written to OUT.jsonl as {"i", "job_id", "at_s", "sent_s"} (sent_s: wall clock just before the
POST). A request to a load-balancing endpoint is `POST /lb/{id}/work`, answered when it has run
(or been refused); it is written as {"i", "lb": true, "at_s", "sent_s", "done_s", "status",
"worker", "start_wall_s"} (the HTTP status, the worker that served it and when that worker began).
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

LAG_THREADS = 8  # late submissions (a burst) go out in parallel instead of queueing behind each other
LB_THREADS = 256  # load-balancing requests stay open while held and while they run: one thread each
LB_TIMEOUT_S = 900.0  # the server answers first (503 at the hold timeout, 504 at the request timeout)


def _lb_request(http: httpx.Client, url: str, i: int, eid: str, at_s: float, service_s: float) -> str:
    sent = time.time()
    r = http.post(f"{url}/lb/{eid}/work", json={"service_s": service_s, "i": i})
    done = time.time()
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return json.dumps({
        "i": i, "lb": True, "at_s": at_s, "sent_s": sent, "done_s": done, "status": r.status_code,
        "worker": r.headers.get("x-gpuserve-worker"), "start_wall_s": body.get("start_wall_s"),
    })


def main(argv: list[str]) -> int:
    plan_path, out_path = argv[0], argv[1]
    with open(plan_path) as f:
        plan = json.load(f)
    headers = {"Authorization": f"Bearer {plan['api_key']}"}
    jobs: list[list[Any]] = plan["jobs"]
    lb_ids = set(plan.get("lb", []))
    # The clients are built before `ready`: building one (its TLS context) takes a noticeable
    # fraction of a second, which must not delay the first submissions.
    limits = httpx.Limits(max_connections=LAG_THREADS, max_keepalive_connections=LAG_THREADS)
    lb_limits = httpx.Limits(max_connections=LB_THREADS, max_keepalive_connections=LB_THREADS)
    with httpx.Client(headers=headers, timeout=60.0, limits=limits) as http, httpx.Client(
        headers=headers, timeout=LB_TIMEOUT_S, limits=lb_limits
    ) as lb_http:
        print("ready", flush=True)  # imports done: the driver may now fix time 0
        line = sys.stdin.readline().split()
        url, t0 = line[0], float(line[1])
        with open(out_path, "w") as out, ThreadPoolExecutor(LAG_THREADS) as pool, ThreadPoolExecutor(LB_THREADS) as lb_pool:

            def submit(i: int, eid: str, at_s: float, service_s: float) -> str:
                sent = time.time()
                r = http.post(f"{url}/v2/{eid}/run", json={"input": {"service_s": service_s, "i": i}})
                r.raise_for_status()
                return json.dumps({"i": i, "job_id": r.json()["id"], "at_s": at_s, "sent_s": sent})

            futures = []
            for i, (eid, at_s, service_s) in enumerate(jobs):
                delay = t0 + at_s - time.time()
                if delay > 0:
                    time.sleep(delay)
                if eid in lb_ids:
                    futures.append(lb_pool.submit(_lb_request, lb_http, url, i, eid, at_s, service_s))
                else:
                    futures.append(pool.submit(submit, i, eid, at_s, service_s))
            for fut in futures:
                out.write(fut.result() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
