#!/usr/bin/env python3
"""Training throughput of the reference networks in PyTorch on the CPU, for comparison with
burn (benches/train_throughput.rs). Same layers (cnn32*: 3x3 valid conv, BN, ReLU, 2x2 max
pool; fc, ReLU, classifier. mobilenet96: the models/mobilenet96.toml stem and depthwise-
separable blocks, global average pool, fc 64), same batch, Adam, random data. Prints one JSON
object per (model, input); mobilenet96 runs a quarter of the steps (at least 5), like burn.

    python3 scripts/bench_train_torch.py --threads 2 --batch 128 --steps 40 [--models a,b]
"""
import argparse
import json
import time

import torch
import torch.nn as nn

MODELS = {
    "cnn32": ([16, 32, 64], 128),
    "cnn32-small": ([8, 16, 32], 64),
    "cnn32-large": ([64, 128, 256], 512),
}
# mobilenet96: (kind, width, stride) per block, as in models/mobilenet96.toml.
MOBILENET96 = [("conv", 16, 2), ("sep", 32, 1), ("sep", 64, 2), ("sep", 64, 1),
               ("sep", 128, 2), ("sep", 128, 2)]


def net(widths, fc, input_shape, classes=10):
    c, h, w = input_shape
    layers = []
    for width in widths:
        layers += [nn.Conv2d(c, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = width, (h - 2) // 2, (w - 2) // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, fc), nn.ReLU(), nn.Linear(fc, classes)]
    return nn.Sequential(*layers)


def mobilenet96(classes=10):
    c, layers = 3, []
    for kind, width, stride in MOBILENET96:
        if kind == "sep":
            layers += [nn.Conv2d(c, c, 3, stride, 1, groups=c), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, width, 1)]
        else:
            layers += [nn.Conv2d(c, width, 3, stride, 1)]
        layers += [nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 64), nn.ReLU(),
               nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--models", default="")
    a = p.parse_args()
    only = set(filter(None, a.models.split(",")))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cases = [(name, shape) for name in MODELS for shape in [(1, 28, 28), (3, 32, 32)]]
    cases.append(("mobilenet96", (3, 96, 96)))
    for name, shape in cases:
        if only and name not in only:
            continue
        steps = max(5, a.steps // 4) if name == "mobilenet96" else a.steps
        model = mobilenet96() if name == "mobilenet96" else net(*MODELS[name], shape)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
        loss_fn = nn.CrossEntropyLoss()
        x = torch.randn(a.batch, *shape)
        y = torch.arange(a.batch) % 10

        def step():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.item()
            loss.backward()
            opt.step()

        for _ in range(5):
            step()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        secs = time.perf_counter() - start
        print(json.dumps({
            "framework": f"pytorch-{torch.__version__}",
            "model": name,
            "input": "x".join(map(str, shape)),
            "batch": a.batch,
            "threads": torch.get_num_threads(),
            "steps": steps,
            "images_per_second": steps * a.batch / secs,
        }), flush=True)


if __name__ == "__main__":
    main()
