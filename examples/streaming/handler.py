"""Streaming: a generator handler; each yield is one chunk on /stream, the aggregate is the output.

Locally:  python examples/streaming/handler.py --test_input '{"input": {"text": "one two three"}}'
Served:   python examples/streaming/handler.py --serve --rp_api_port 8000
"""

import time

from gpuserve import serverless


def handler(job):
    words = str(job["input"].get("text", "")).split()
    delay_s = float(job["input"].get("delay_s", 0.05))
    for i, word in enumerate(words):
        time.sleep(delay_s)  # stands in for producing one token
        yield {"index": i, "token": word}


if __name__ == "__main__":
    serverless.start({"handler": handler, "return_aggregate_stream": True})
