"""The original project's PyTorch MNIST trainer, written as a sweeprun command job.

It reads the resolved config that the worker writes (`--config {config_path}`,
or $SWEEP_CONFIG), trains the model it describes with the job's seed
($SWEEP_SEED), and talks to the worker through files only:

- one JSON line per epoch appended to $SWEEP_METRICS, then a final line with
  the test metrics of the best checkpoint;
- checkpoints under $SWEEP_RUN_DIR/checkpoints/ (written to a temporary name
  and renamed, so the worker never uploads half a file);
- on a resumed attempt, $SWEEP_RESUME_FROM names the checkpoint to continue from.

It understands the built-in trainer's schema (model.type fc|cnn,
hidden_sizes, dropout, batch_norm; data.data_dir, train_split, batch_size,
subset; training.epochs, learning_rate, optimizer, momentum, weight_decay,
early_stopping, lr_schedule, threads), so one sweep can run the same configs
and seeds through both trainers. It needs only torch (no numpy, no yaml).
"""
import argparse
import gzip
import json
import math
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN, STD = 0.1307, 0.3081


class FCNet(nn.Module):
    """fc1..fcN (+ bn1.. after each hidden layer with batch_norm): the names of the Rust trainer."""

    def __init__(self, hidden, dropout, batch_norm):
        super().__init__()
        dims = [784, *hidden]
        for i in range(len(hidden)):
            setattr(self, f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1]))
            if batch_norm:
                setattr(self, f"bn{i + 1}", nn.BatchNorm1d(dims[i + 1]))
        setattr(self, f"fc{len(hidden) + 1}", nn.Linear(dims[-1], 10))
        self.n, self.dropout, self.batch_norm = len(hidden), dropout, batch_norm

    def forward(self, x):
        x = x.flatten(1)
        for i in range(self.n):
            x = getattr(self, f"fc{i + 1}")(x)
            if self.batch_norm:
                x = getattr(self, f"bn{i + 1}")(x)
            x = F.dropout(F.relu(x), self.dropout, self.training)
        return getattr(self, f"fc{self.n + 1}")(x)


class CNN(nn.Module):
    def __init__(self, dropout):
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


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).view(*shape)


def load_split(data_dir, kind):
    def find(stem):
        for name in (stem, stem + ".gz"):
            if os.path.exists(os.path.join(data_dir, name)):
                return os.path.join(data_dir, name)
        raise SystemExit(f"{data_dir}: no {stem}[.gz]")

    prefix = "train" if kind == "train" else "t10k"
    images = read_idx(find(f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"))
    x = (images.float().unsqueeze(1) / 255.0 - MEAN) / STD
    return x, labels.long()


def get(config, path, default):
    node = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def save_atomic(obj, path):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def evaluate(model, x, y, batch_size):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(x), correct / len(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.environ.get("SWEEP_CONFIG"))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SWEEP_SEED", "42")))
    parser.add_argument("--epochs", type=int, help="override training.epochs")
    args = parser.parse_args()
    with open(args.config) as f:
        config = json.load(f)  # the worker writes YAML's JSON form

    run_dir = os.environ.get("SWEEP_RUN_DIR", ".")
    metrics_path = os.environ.get("SWEEP_METRICS", os.path.join(run_dir, "metrics.jsonl"))
    checkpoints = os.path.join(run_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)

    threads = int(os.environ.get("SWEEP_THREADS") or get(config, "training.threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    device_name = os.environ.get("SWEEP_DEVICE") or get(config, "training.device", "auto")
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)

    # Data: the seed splits train/validation, as in the original project.
    data_dir = get(config, "data.data_dir", "./data/mnist")
    x, y = load_split(data_dir, "train")
    x_test, y_test = load_split(data_dir, "test")
    subset = get(config, "data.subset", None)
    if subset:
        x, y = x[:subset["train"]], y[:subset["train"]]
        x_test, y_test = x_test[:subset["test"]], y_test[:subset["test"]]
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(x), generator=generator)
    n_train = int(len(x) * get(config, "data.train_split", 0.8))
    x_train, y_train = x[order[:n_train]].to(device), y[order[:n_train]].to(device)
    x_val, y_val = x[order[n_train:]].to(device), y[order[n_train:]].to(device)
    x_test, y_test = x_test.to(device), y_test.to(device)
    batch_size = get(config, "data.batch_size", 64)

    torch.manual_seed(args.seed)
    model_type = get(config, "model.type", "fc")
    dropout = get(config, "model.dropout", 0.2)
    if model_type == "cnn":
        model = CNN(dropout)
    else:
        model = FCNet(get(config, "model.hidden_sizes", [256, 128]), dropout,
                      get(config, "model.batch_norm", False))
    model.to(device)

    lr = get(config, "training.learning_rate", 1e-3)
    weight_decay = get(config, "training.weight_decay", 0.0)
    optimizer_name = get(config, "training.optimizer", "adam")
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=get(config, "training.momentum", 0.9),
                                    weight_decay=weight_decay)
    elif optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    epochs = args.epochs or get(config, "training.epochs", 20)
    schedule = get(config, "training.lr_schedule", {"type": "none"}) or {"type": "none"}
    early = get(config, "training.early_stopping", None)

    def lr_at(epoch):  # 1-based
        if schedule.get("type") == "step":
            return lr * schedule.get("gamma", 0.5) ** ((epoch - 1) // schedule.get("step_size", 5))
        if schedule.get("type") == "cosine":
            min_lr = schedule.get("min_lr", 0.0)
            return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * (epoch - 1) / epochs)) / 2
        return lr

    start_epoch, best_val_loss, stale = 1, None, 0
    resume_from = os.environ.get("SWEEP_RESUME_FROM")
    if resume_from and os.path.exists(os.path.join(checkpoints, "last.pt")):
        state = torch.load(os.path.join(checkpoints, "last.pt"), map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_val_loss, stale = state["epoch"] + 1, state["best_val_loss"], state["stale"]
        torch.set_rng_state(state["rng"])
        print(f"resumed from {resume_from} at epoch {start_epoch}", flush=True)

    with open(metrics_path, "a") as metrics:
        for epoch in range(start_epoch, epochs + 1):
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch)
            model.train()
            perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed + epoch))
            loss_sum, correct = 0.0, 0
            for i in range(0, len(perm), batch_size):
                idx = perm[i:i + batch_size].to(device)
                xb, yb = x_train[idx], y_train[idx]
                optimizer.zero_grad()
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == yb).sum().item()
            val_loss, val_acc = evaluate(model, x_val, y_val, 1000)
            improved = best_val_loss is None or val_loss < best_val_loss - (early or {}).get("min_delta", 0.0)
            if improved:
                best_val_loss, stale = val_loss, 0
                save_atomic(model.state_dict(), os.path.join(checkpoints, "best.pt"))
            else:
                stale += 1
            # The checkpoint first, then the line: the worker uploads the
            # checkpoint files it finds when the epoch's line appears.
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                         "best_val_loss": best_val_loss, "stale": stale, "rng": torch.get_rng_state()},
                        os.path.join(checkpoints, "last.pt"))
            line = {"epoch": epoch, "train_loss": loss_sum / len(perm), "train_acc": correct / len(perm),
                    "val_loss": val_loss, "val_acc": val_acc, "lr": lr_at(epoch),
                    "seconds": time.perf_counter() - started}
            metrics.write(json.dumps(line) + "\n")
            metrics.flush()
            print(f"epoch {epoch}/{epochs}: train loss {line['train_loss']:.4f}, val loss {val_loss:.4f}, "
                  f"val acc {val_acc:.4f}", flush=True)
            if early and stale >= early.get("patience", 5):
                print(f"early stop after epoch {epoch}", flush=True)
                break

        model.load_state_dict(torch.load(os.path.join(checkpoints, "best.pt"), map_location=device))
        test_loss, test_acc = evaluate(model, x_test, y_test, 1000)
        metrics.write(json.dumps({"test_loss": test_loss, "test_acc": test_acc}) + "\n")
    print(f"test acc {test_acc:.4f}", flush=True)


if __name__ == "__main__":
    main()
