"""PyTorch reference for the throughput benchmark (`sweepctl bench`).

Trains the same model as the Rust trainer (same architecture, batch size,
optimizer, data, normalisation and thread count) for a fixed number of steps
and prints one JSON line: {"samples_per_s": ..., "steps": ..., "seconds": ...}.
The module definitions double as the reference for checkpoint names: a
`best.safetensors` of ours loads into them with `load_state_dict`.
"""
import argparse
import gzip
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class FCNet(nn.Module):
    """model.type: fc (batch_norm: false) -> fc1, fc2, fc3."""

    def __init__(self, hidden=(256, 128), dropout=0.2):
        super().__init__()
        dims = [784, *hidden]
        for i in range(len(hidden)):
            setattr(self, f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1]))
        setattr(self, f"fc{len(hidden) + 1}", nn.Linear(dims[-1], 10))
        self.n = len(hidden)
        self.dropout = dropout

    def forward(self, x):
        x = x.flatten(1)
        for i in range(self.n):
            x = F.dropout(F.relu(getattr(self, f"fc{i + 1}")(x)), self.dropout, self.training)
        return getattr(self, f"fc{self.n + 1}")(x)


class CNN(nn.Module):
    """model.type: cnn, batch_norm: true -> conv1, bn1, conv2, bn2, fc1, fc2."""

    def __init__(self, dropout=0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)
        self.dropout = dropout

    def forward(self, x):
        x = F.max_pool2d(self.bn1(F.relu(self.conv1(x))), 2)
        x = F.max_pool2d(self.bn2(F.relu(self.conv2(x))), 2)
        x = F.dropout(F.relu(self.fc1(x.flatten(1))), self.dropout, self.training)
        return self.fc2(x)


def load_images(data_dir):
    with gzip.open(os.path.join(data_dir, "train-images-idx3-ubyte.gz")) as f:
        images = torch.frombuffer(bytearray(f.read()[16:]), dtype=torch.uint8).view(-1, 1, 28, 28)
    with gzip.open(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")) as f:
        labels = torch.frombuffer(bytearray(f.read()[8:]), dtype=torch.uint8)
    x = (images.float() / 255.0 - 0.1307) / 0.3081
    return x, labels.long()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["fc", "cnn"], required=True)
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = load_images(args.data_dir)
    device = torch.device(args.device)
    model = (FCNet() if args.model == "fc" else CNN()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    model.train()
    perm = torch.randperm(x.shape[0])
    x, y = x[perm].to(device), y[perm].to(device)
    bs = args.batch_size
    n_batches = x.shape[0] // bs

    def step(i):
        j = (i % n_batches) * bs
        xb, yb = x[j:j + bs], y[j:j + bs]
        opt.zero_grad()
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        opt.step()
        # Accumulate like a real loop does (the Rust trainer keeps these on the device).
        return loss.detach(), (logits.argmax(1) == yb).sum()

    for i in range(args.warmup):
        step(i)
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(args.steps):
        loss, c = step(args.warmup + i)
        loss_sum += loss * bs
        correct += c
    loss_sum.item()  # waits for queued GPU work
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "pytorch", "model": args.model, "steps": args.steps, "batch_size": bs,
                      "threads": args.threads, "seconds": seconds,
                      "samples_per_s": args.steps * bs / seconds, "final_loss": float(loss.item())}))


if __name__ == "__main__":
    main()
