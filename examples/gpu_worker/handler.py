"""Example GPU worker: the model is loaded once at start-up (outside the handler), then every job reuses it.

The model is a small two-layer network. With PyTorch and a CUDA GPU it runs there; without
them (the stock image has no torch) it runs the same arithmetic in plain Python, so the
worker still serves jobs on a CPU-only host. Weights come from MODEL_PATH/weights.json when
the endpoint mounts a model source (host cache, baked into the image, or a volume), else
they are drawn from a fixed seed.
"""

import json
import os
import random
import time

from gpuserve import serverless

HIDDEN = 64


def _weights(dim: int) -> dict:
    path = os.path.join(os.environ.get("MODEL_PATH", "/models"), "weights.json")
    if os.path.isfile(path):
        with open(path) as f:
            return {"source": path, **json.load(f)}
    rng = random.Random(0)
    return {
        "source": "seed 0",
        "w1": [[rng.gauss(0, 0.1) for _ in range(dim)] for _ in range(HIDDEN)],
        "w2": [rng.gauss(0, 0.1) for _ in range(HIDDEN)],
    }


def load_model(dim: int = 16):
    started = time.perf_counter()
    weights = _weights(dim)
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        w1 = torch.tensor(weights["w1"], device=device)
        w2 = torch.tensor(weights["w2"], device=device)

        def forward(x):
            h = torch.relu(w1 @ torch.tensor(x, device=device))
            return float(w2 @ h)

    except ImportError:
        device = "python"
        w1, w2 = weights["w1"], weights["w2"]

        def forward(x):
            h = [max(0.0, sum(a * b for a, b in zip(row, x))) for row in w1]
            return sum(a * b for a, b in zip(w2, h))

    load_s = time.perf_counter() - started
    print(f"model loaded on {device} from {weights['source']} in {load_s:.3f} s", flush=True)
    return forward, {"device": device, "weights": weights["source"], "load_s": round(load_s, 4)}


FORWARD, INFO = load_model()


def handler(job):
    x = job["input"].get("x") or [1.0] * 16
    return {"y": FORWARD([float(v) for v in x]), **INFO}


if __name__ == "__main__":
    serverless.start({"handler": handler})
