"""Trains a small ResNet (residual blocks) on Fashion-MNIST in PyTorch (CPU) and exports it
with torch.onnx.export, for scripts/torch-teacher.sh.

Layout (input 1x28x28, normalised with the training split's mean and std), built so that the
unpadded conv + max-pool stages have the block shapes of the student cnn32-small (8x13x13,
16x5x5, 32x1x1) with more channels:
  stem  conv 3x3 1->32, BN, ReLU, max-pool 2   -> 32x13x13  (tap for the student's block 0)
  res1  residual block 32 at 13x13
  down1 conv 3x3 32->64, BN, ReLU, max-pool 2  -> 64x5x5    (tap for block 1)
  res2  residual block 64 at 5x5
  down2 conv 3x3 64->128, BN, ReLU, max-pool 2 -> 128x1x1   (tap for block 2)
  res3  residual block 128 at 1x1
  global average pool -> embedding (128) -> linear -> logits (10)
A residual block is conv-BN-ReLU, conv-BN, Add(input), ReLU: its second conv is read by the
Add before any activation, so it cannot be an InDistill tap (`distill-edge inspect` says so).
The graph has two outputs, `logits` and `embedding`.
"""

import argparse
import gzip
import json
import os
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = struct.unpack(">I", raw[:4])[0]
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4 : 4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, split):
    prefix = "train" if split == "train" else "t10k"
    for ext in ("", ".gz"):
        images = os.path.join(folder, f"{prefix}-images-idx3-ubyte{ext}")
        labels = os.path.join(folder, f"{prefix}-labels-idx1-ubyte{ext}")
        if os.path.exists(images) and os.path.exists(labels):
            return read_idx(images), read_idx(labels)
    raise SystemExit(f"{folder}: no {prefix} IDX files (apt-get install dataset-fashion-mnist)")


class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + x)


def down(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class SmallResNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            down(1, 32),
            Residual(32),
            down(32, 64),
            Residual(64),
            down(64, 128),
            Residual(128),
        )
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        embedding = self.features(x).mean(dim=(2, 3))
        return self.fc(embedding), embedding


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits, _ = model(x[i : i + batch])
            correct += (logits.argmax(1) == y[i : i + batch]).sum().item()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-images", type=int, default=0, help="use the first N (0: all)")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    xtr, ytr = load(a.data, "train")
    xte, yte = load(a.data, "test")
    if a.train_images > 0:
        xtr, ytr = xtr[: a.train_images], ytr[: a.train_images]
    mean = float(xtr.mean() / 255.0)
    std = float((xtr / 255.0).std())
    prep = lambda x: (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1) - mean) / std
    xtr_t, xte_t = prep(xtr), prep(xte)
    ytr_t, yte_t = torch.from_numpy(ytr.astype(np.int64)), torch.from_numpy(yte.astype(np.int64))
    model = SmallResNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(1, a.epochs + 1):
        model.train()
        started = time.time()
        order = torch.randperm(len(xtr_t))
        total = 0.0
        for i in range(0, len(order), 128):
            idx = order[i : i + 128]
            logits, _ = model(xtr_t[idx])
            loss = F.cross_entropy(logits, ytr_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        acc = evaluate(model, xte_t, yte_t)
        history.append(
            {"epoch": epoch, "loss": total / len(order), "test_top1": acc, "seconds": time.time() - started}
        )
        print(json.dumps(history[-1]), flush=True)
    model.eval()
    tmp = a.out + ".tmp"
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 28, 28),),
        tmp,
        dynamo=False,
        input_names=["input"],
        output_names=["logits", "embedding"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
    )
    os.replace(tmp, a.out)
    with open(a.out + ".json", "w") as f:
        json.dump(
            {"mean": [mean], "std": [std], "torch": torch.__version__, "history": history},
            f,
            indent=2,
        )
    print(f"wrote {a.out} (PyTorch test top-1 {history[-1]['test_top1']:.4f})")


if __name__ == "__main__":
    main()
