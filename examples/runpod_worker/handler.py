"""A Runpod worker, unchanged: `import runpod` and `runpod.serverless.start`. gpuserve runs it as is.

Locally (Runpod's own test mode):  python examples/runpod_worker/handler.py --test_input '{"input": {"prompt": "hi"}}'
On gpuserve:                       gpuserve serve examples/runpod_worker/endpoints.yaml
"""

import os

import runpod


def handler(job):
    job_input = job["input"]
    prompt = job_input.get("prompt", "")
    if not isinstance(prompt, str):
        # A returned `error` ends the job FAILED with this message on /status.
        return {"error": f"input.prompt must be a string, was {prompt!r}"}
    runpod.serverless.progress_update(job, {"stage": "generating"})
    return {
        "echo": job_input,
        "text": prompt.upper(),
        "worker": os.environ.get("RUNPOD_POD_ID"),
    }


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
