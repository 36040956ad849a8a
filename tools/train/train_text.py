"""Trains the default text model (a small GQA Llama over the tok512 vocabulary) on natural prose, on the CPU.

Usage (resumable; rerunning with the same --out continues from <out>/ckpt.pt):
  nice -n 19 /usr/bin/python3 tools/train/train_text.py --out .train/text --minutes 80 --threads 1

Corpus (text_corpus): the State of the Union addresses, Botchan and the first 40 Paul Graham essays from
../shared/data (modern English prose), whitespace collapsed to single spaces; the last 5% of each document is
held out. Each step is --batch windows of --length tokens drawn uniformly from the training part, loss = mean
next-token cross-entropy. Learning rate: linear warmup, cosine from --lr to --lr/10 over the --minutes budget
(a function of trained time, like train_fixture.py). Every --ckpt-minutes: checkpoint (same format as
train_fixture.py, so export_gguf.py exports it), held-out loss and a greedy sample in <out>/log.txt.
"""

import argparse
import glob
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_data import BOS, SHARED, Tokenizer  # noqa: E402
from train_common import add_shape_args, load_or_init, open_run  # noqa: E402

HELD_OUT = 0.05


def text_corpus():
    """Documents (one string each) of the default model's corpus."""
    essays = sorted(glob.glob(os.path.join(SHARED, "eval/niah/PaulGrahamEssays/*.txt")))[:40]
    files = [os.path.join(SHARED, "corpora", f) for f in ("sotu.txt", "botchan.txt")] + essays
    docs = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            docs.append(" ".join(fh.read().split()))
    return docs


def load_splits(tok, cache_dir):
    """(train, held-out) int64 token arrays: each document's first 95% / last 5%, concatenated."""
    path = os.path.join(cache_dir, "text_corpus.npz")
    if not os.path.exists(path):
        train, held = [], []
        for d in text_corpus():
            ids = np.array(tok.encode(d), dtype=np.int16)
            cut = int(len(ids) * (1 - HELD_OUT))
            train.append(ids[:cut])
            held.append(ids[cut:])
        os.makedirs(cache_dir, exist_ok=True)
        np.savez(path, train=np.concatenate(train), held=np.concatenate(held))
    z = np.load(path)
    return z["train"].astype(np.int64), z["held"].astype(np.int64)


def windows(data, length, count, rng):
    """[count, length + 1] windows starting at random offsets; each starts with BOS (as a prompt does)."""
    starts = rng.integers(0, len(data) - length, size=count)
    rows = [np.concatenate(([BOS], data[s:s + length])) for s in starts]
    return torch.from_numpy(np.stack(rows))


def mean_ce(model, batch):
    logits = model(batch[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@torch.no_grad()
def held_out_ce(model, held, length):
    """Mean next-token CE over consecutive held-out windows (deterministic)."""
    model.eval()
    n = (len(held) - 1) // length
    total = 0.0
    for i in range(0, n, 8):
        rows = [np.concatenate(([BOS], held[j * length:(j + 1) * length])) for j in range(i, min(n, i + 8))]
        total += float(mean_ce(model, torch.from_numpy(np.stack(rows)))) * len(rows)
    model.train()
    return total / max(1, n)


@torch.no_grad()
def greedy(model, tok, prompt, n):
    model.eval()
    ids = [BOS] + tok.encode(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    model.train()
    return tok.decode(ids[1:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=80.0, help="training-time budget (schedule horizon)")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1)
    add_shape_args(ap, dim=192, layers=6, heads=6, kv_heads=2, ffn=512)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ckpt_path, say = open_run(args.out)
    tok = Tokenizer()
    train, held = load_splits(tok, os.path.dirname(os.path.abspath(args.out)))
    model, opt, ck = load_or_init(
        ckpt_path, args, lambda p: torch.optim.AdamW(p, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1))
    cfg = model.c
    step, trained_s = 0, 0.0
    if ck:
        step, trained_s = ck["step"], ck["trained_s"]
        say("resumed at step %d, %.1f min trained" % (step, trained_s / 60))
    else:
        say("config %s, %d params, %d train / %d held-out tokens, args %s" % (
            cfg.to_dict(), model.num_params(), len(train), len(held), vars(args)))
    rng = np.random.default_rng(args.seed * 7919 + step)
    budget = args.minutes * 60.0
    last_ckpt, acc, n = time.time(), 0.0, 0

    def checkpoint():
        tmp = ckpt_path + ".tmp"
        torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "opt": opt.state_dict(),
                    "step": step, "trained_s": trained_s}, tmp)
        os.replace(tmp, ckpt_path)
        say("step %d  %.1f min  held-out CE %.3f  | %s" % (
            step, trained_s / 60, held_out_ce(model, held, args.length),
            greedy(model, tok, "The people of this country", 40)))

    while trained_s < budget:
        t0 = time.time()
        p = trained_s / budget
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = mean_ce(model, windows(train, args.length, args.batch, rng))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        trained_s += time.time() - t0
        acc, n = acc + float(loss), n + 1
        if step % 50 == 0:
            say("step %d  %.1f min  lr %.2e  train CE %.3f" % (step, trained_s / 60, lr, acc / n))
            acc, n = 0.0, 0
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    say("done: step %d, %.1f min trained" % (step, trained_s / 60))


if __name__ == "__main__":
    main()
