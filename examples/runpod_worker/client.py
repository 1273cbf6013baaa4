"""A Runpod client, unchanged apart from where it points: the `runpod` package calling a gpuserve endpoint.

    export RUNPOD_ENDPOINT_BASE_URL=http://127.0.0.1:8000/v2   # or set runpod.endpoint_url_base in code
    export RUNPOD_API_KEY=sk-local                             # a key from endpoints.yaml
    python examples/runpod_worker/client.py [ENDPOINT_ID] ['{"prompt": "hello"}']
"""

import json
import os
import sys

import runpod

runpod.api_key = os.environ.get("RUNPOD_API_KEY", "sk-local")
endpoint = runpod.Endpoint(sys.argv[1] if len(sys.argv) > 1 else "runpod-echo")
job_input = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {"prompt": "hello"}

# Wait for the result in one call (the SDK polls /status if the server's wait runs out).
print("runsync:", json.dumps(endpoint.run_sync(job_input, timeout=120)))

# Queue a job, then poll for its output.
job = endpoint.run(job_input)
print("run:", job.job_id)
print("output:", json.dumps(job.output(timeout=120)))
print("status:", job.status())
print("health:", json.dumps(endpoint.health()))
