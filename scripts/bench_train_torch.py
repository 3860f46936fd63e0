#!/usr/bin/env python3
"""Training throughput of the reference networks in PyTorch on the CPU, for comparison with
burn (benches/train_throughput.rs). Same layers (3x3 valid conv, BN, ReLU, 2x2 max pool; fc,
ReLU, classifier), same batch, Adam, random data. Prints one JSON object per (model, input).

    python3 scripts/bench_train_torch.py --threads 2 --batch 128 --steps 40
"""
import argparse
import json
import time

import torch
import torch.nn as nn

MODELS = {"cnn32": ([16, 32, 64], 128), "cnn32-small": ([8, 16, 32], 64)}


def net(widths, fc, input_shape, classes=10):
    c, h, w = input_shape
    layers = []
    for width in widths:
        layers += [nn.Conv2d(c, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)]
        c, h, w = width, (h - 2) // 2, (w - 2) // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, fc), nn.ReLU(), nn.Linear(fc, classes)]
    return nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=40)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name, (widths, fc) in MODELS.items():
        for shape in [(1, 28, 28), (3, 32, 32)]:
            model = net(widths, fc, shape)
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
            for _ in range(a.steps):
                step()
            secs = time.perf_counter() - start
            print(json.dumps({
                "framework": f"pytorch-{torch.__version__}",
                "model": name,
                "input": "x".join(map(str, shape)),
                "batch": a.batch,
                "threads": torch.get_num_threads(),
                "steps": a.steps,
                "images_per_second": a.steps * a.batch / secs,
            }), flush=True)


if __name__ == "__main__":
    main()
