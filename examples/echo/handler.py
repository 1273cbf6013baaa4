"""Echo: the smallest worker. Returns its input.

Locally:  python examples/echo/handler.py --test_input '{"input": {"x": 1}}'
Served:   python examples/echo/handler.py --serve --rp_api_port 8000
"""

from gpuserve import serverless


def handler(job):
    return {"echo": job["input"]}


if __name__ == "__main__":
    serverless.start({"handler": handler})
