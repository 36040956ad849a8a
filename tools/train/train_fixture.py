"""Trains the retrieval fixture (a small GQA Llama over the tok512 vocabulary) on the CPU.

Usage (resumable; rerunning with the same --out continues from <out>/ckpt.pt):
  nice -n 19 /usr/bin/python3 tools/train/train_fixture.py --out .train/fixture --minutes 78

Each step draws `--tokens` tokens of fixture samples (fixture_data.FixtureSampler) of one length.
Loss = mean over answers of their mean token CE + lm_weight * mean CE on all other tokens (readable text)
+ copy_weight * mean CE on auxiliary repeated spans. The schedule is a function of the progress
p = trained seconds / (--minutes * 60), so the run fits a wall-clock budget:
  length curriculum  phase 0: L in [128, 384]; phase 1: [256, 1024]; phase 2: [512, 2048] (30%: [128, 512]).
                     A phase ends when the answer exact match of its last 30 steps is >= 0.6, or at
                     p = 0.62 (phase 0) / p = 0.82 (phase 1). Auxiliary copy spans (8-24 tokens repeated
                     from the first half): phase 0 max(2, L/40) per sample, phase 1 two; phase 0: 70% of city facts replaced by digit (kv) facts.
                     Copy drills (random token strings repeated, see drill()) replace 50% of the samples
                     in phase 0 and 25% in phase 1.
  extension          --extend M continues a finished run for M more minutes in phase 3 (long contexts:
                     75% L in [1536, 2048], else [256, 1536]; --far-prob (default 40%) of needle depths
                     drawn from the first half of the haystack, i.e. far from the question), learning rate
                     cosine from --lr to --lr/10 over the extension. --new-extension starts another one.
                     --edge-prob p draws that share of depths at the haystack's ends instead.
  learning rate      linear warmup (--warmup steps), cosine from --lr to --lr/10.
Checkpoints (model, optimizer, step, trained time, phase) are written atomically every --ckpt-minutes.
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fixture_data import FixtureSampler, Tokenizer, load_corpus  # noqa: E402
from train_common import add_shape_args, load_or_init, open_run  # noqa: E402


def length_for(phase, rng):
    if phase == 0:
        lo, hi = 128, 256
    elif phase == 1:
        lo, hi = 256, 1024
    elif phase == 3:
        lo, hi = (1536, 2048) if rng.random() < 0.75 else (256, 1536)
    elif rng.random() < 0.3:
        lo, hi = 128, 512
    else:
        lo, hi = 512, 2048
    return rng.randrange(lo, hi + 1, 32)


def drill(rng, L):
    """Copy drill: BOS + a random token string R (16-48 tokens from ids 259-511) repeated to length L;
    every token after the first copy of R is a copy target (dense induction signal)."""
    k = rng.randint(16, 48)
    r = [rng.randrange(259, 512) for _ in range(k)]
    ids = [1] + (r * (L // k + 1))[:L - 1]
    wc = [0.0] * (k + 1) + [1.0] * (L - k - 1)
    return ids, [0.0] * L, wc


def induction_targets(ids, wa, wc):
    """Attention-supervision targets of the induction head, in model-input coordinates (input =
    ids[:-1]): for each query position t whose next token ids[t + 1] is a copy or answer target,
    the key positions j + 1 (j < t) where the bigram (ids[j - 1], ids[j]) equals (ids[t - 1], ids[t]):
    the head that attends there can copy ids[j + 1], the continuation seen last time.
    Returns a list of (t, [key positions])."""
    seen = {}
    out = []
    for t in range(1, len(ids) - 1):
        bigram = (ids[t - 1], ids[t])
        if (wc[t + 1] > 0 or wa[t + 1] > 0) and bigram in seen:
            out.append((t, [j + 1 for j in seen[bigram]]))
        seen.setdefault(bigram, []).append(t)
    return out


def batch(sampler, L, B, copy_spans, drill_frac, rng):
    """ids, answer weights, copy weights [B, L]; induction target mask and question-focus
    weights [B, L - 1, L - 1] (query t of a question: 1/n on each of the n tokens of its needle)."""
    ids, wa, wc, focus = [], [], [], []
    for _ in range(B):
        if rng.random() < drill_frac:
            i, a, c = drill(rng, L)
            f = []
        else:
            i, a, c, _ = sampler.sample(L, copy_spans=copy_spans)
            f = sampler.last_focus
        ids.append(i), wa.append(a), wc.append(c), focus.append(f)
    ind = torch.zeros(B, L - 1, L - 1)
    foc = torch.zeros(B, L - 1, L - 1)
    for b in range(B):
        for t, keys in induction_targets(ids[b], wa[b], wc[b]):
            ind[b, t, keys] = 1.0
        for qpos, npos in focus[b]:
            for t in qpos:
                foc[b, t, npos.start:npos.stop] = 1.0 / len(npos)
    return torch.tensor(ids), torch.tensor(wa), torch.tensor(wc), ind, foc


def attention_losses(atts, ind):
    """Attention supervision (speeds up forming the copy circuit): layer 0 head 0 attends to the
    previous token; layer 1 head 0 attends where the current bigram was last followed (ind).
    Returns (previous-token loss, induction loss), mean -log of the probability on the targets."""
    a0 = atts[0][:, 0]  # [B, T, T]
    prev = torch.diagonal(a0, offset=-1, dim1=1, dim2=2)  # [B, T - 1]: query t -> key t - 1
    lp = -torch.log(prev + 1e-6).mean()
    rows = ind.sum(-1) > 0
    if not bool(rows.any()):
        return lp, torch.zeros(())
    p = (atts[1][:, 0] * ind).sum(-1)[rows]
    return lp, -torch.log(p + 1e-6).mean()


def focus_loss(atts, foc):
    """Question -> needle attention (head 1 of layers 1..n-1): cross-entropy between the uniform
    distribution over the needle's tokens and the attention of each question token, so that the
    question's attention covers the fact it asks about, as retrieval heads of real LLMs do (what
    observation-window scoring relies on)."""
    rows = foc.sum(-1) > 0
    if not bool(rows.any()):
        return torch.zeros(())
    terms = [-(foc * torch.log(a[:, 1] + 1e-6)).sum(-1)[rows].mean() for a in atts[1:]]
    return sum(terms) / len(terms)


def losses(model, ids, wa, wc, atts=None):
    """Returns (answer CE, LM CE on non-answer tokens, copy-span CE, exact-match fraction of answers).
    atts: None, or a list that receives each layer's attention probabilities."""
    logits = model(ids[:, :-1], atts)
    tgt = ids[:, 1:]
    wa, wc = wa[:, 1:], wc[:, 1:]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none").view_as(tgt)
    la = (ce * wa).sum() / wa.sum().clamp(min=1e-6)  # mean over answers of their mean token CE
    wa = (wa > 0).float()
    wl = 1.0 - wa
    ll = (ce * wl).sum() / wl.sum()
    lc = (ce * wc).sum() / wc.sum().clamp(min=1)
    correct = (logits.argmax(-1) == tgt).float()
    # exact match per sample: all answer tokens right (greedy decoding equals teacher forcing then)
    has = wa.sum(1) > 0  # rows with answers (copy drills have none)
    em = (((1 - correct) * wa).sum(1) == 0)[has].float().mean() if bool(has.any()) else torch.tensor(0.0)
    return la, ll, lc, em


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=78.0, help="training-time budget (schedule horizon)")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per step in phase 0 (twice that later)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--lm-weight", type=float, default=0.2)
    ap.add_argument("--copy-weight", type=float, default=1.0)
    ap.add_argument("--attn-weight", type=float, default=0.5,
                    help="weight of the attention-supervision losses (phases 0 and 1; a tenth in phase 2)")
    ap.add_argument("--focus-weight", type=float, default=0.0,
                    help="weight of the question -> needle attention loss (focus_loss)")
    ap.add_argument("--extend", type=float, default=0.0,
                    help="minutes to continue a finished run in phase 3 (see extension above)")
    ap.add_argument("--new-extension", action="store_true",
                    help="start a new --extend window at the checkpoint's trained time (a second extension)")
    ap.add_argument("--far-prob", type=float, default=0.4,
                    help="phase 3: probability that a needle depth is drawn from the haystack's first half")
    ap.add_argument("--edge-prob", type=float, default=0.0,
                    help="phase 3: probability that a needle depth is drawn at an end of the haystack "
                         "([0, 0.12] or [0.9, 1]; applied after --far-prob)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (a GPU makes this minutes)")
    ap.add_argument("--ckpt-minutes", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=1234)
    add_shape_args(ap, dim=128, layers=4, heads=4, kv_heads=2, ffn=384)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt_path, say = open_run(args.out)
    model, opt, ck = load_or_init(
        ckpt_path, args, lambda p: torch.optim.AdamW(p, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01),
        args.device)
    cfg = model.c
    step, trained_s, phase, em_hist = 0, 0.0, 0, []
    if ck:
        step, trained_s = ck["step"], ck["trained_s"]
        phase, em_hist = ck.get("phase", 0), ck.get("em_hist", [])
        say("resumed at step %d, %.1f min trained" % (step, trained_s / 60))
    else:
        say("config %s, %d params, args %s" % (json.dumps(cfg.to_dict()), model.num_params(), vars(args)))
    tok = Tokenizer()
    docs = load_corpus(tok, "train", os.path.dirname(os.path.abspath(args.out)))
    sampler = FixtureSampler(tok, docs, args.seed + step)
    rng = random.Random(args.seed * 7 + step)
    budget = args.minutes * 60.0
    ext_start = None
    if args.extend > 0:
        ext_start = (ck.get("ext_start") or trained_s) if ck else 0.0
        if args.new_extension:
            ext_start = trained_s
        budget = ext_start + args.extend * 60.0
        if phase != 3:
            phase = 3
            say("step %d: phase 3 (extension of %.0f min from %.1f min trained)" % (step, args.extend, ext_start / 60))
    last_ckpt = time.time()
    acc = {"la": 0.0, "ll": 0.0, "lc": 0.0, "em": 0.0, "lp": 0.0, "li": 0.0, "lf": 0.0, "n": 0}

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save({"config": cfg.to_dict(), "model": {k: v.cpu() for k, v in model.state_dict().items()}, "opt": opt.state_dict(),
                    "step": step, "trained_s": trained_s,
                    "phase": phase, "em_hist": em_hist[-30:], "ext_start": ext_start}, tmp)
        os.replace(tmp, ckpt_path)

    while trained_s < budget:
        t0 = time.time()
        p = trained_s / budget if ext_start is None else (trained_s - ext_start) / (budget - ext_start)
        # adaptive curriculum: advance when the recent answer exact match is good, or by the deadlines
        recent = sum(em_hist[-30:]) / max(1, len(em_hist[-30:]))
        if phase == 3:
            pass
        elif phase == 0 and ((len(em_hist) >= 30 and recent >= 0.8) or p >= 0.45):
            phase, em_hist = 1, []
            say("step %d: phase 1 (p %.2f, recent EM %.2f)" % (step, p, recent))
        elif phase == 1 and ((len(em_hist) >= 30 and recent >= 0.8) or p >= 0.7):
            phase, em_hist = 2, []
            say("step %d: phase 2 (p %.2f, recent EM %.2f)" % (step, p, recent))
        L = length_for(phase, rng)
        B = max(1, (args.tokens if phase == 0 else 2 * args.tokens) // L)
        copy_spans = max(2, L // 40) if phase == 0 else (2 if phase == 1 else 0)
        sampler.far_prob = args.far_prob if phase == 3 else 0.0
        sampler.edge_prob = args.edge_prob if phase == 3 else 0.0
        sampler.city_prob = 0.3 if phase == 0 else 1.0
        sampler.single_prob = 0.8 if phase == 0 else 0.6
        drill_frac = 0.4 if phase == 0 else (0.2 if phase == 1 else 0.05)
        ids, wa, wc, ind, foc = (t.to(args.device) for t in batch(sampler, L, B, copy_spans, drill_frac, rng))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        atts = [] if args.attn_weight > 0 or args.focus_weight > 0 else None
        la, ll, lc, em = losses(model, ids, wa, wc, atts)
        loss = la + args.lm_weight * ll + (args.copy_weight * lc if (copy_spans or drill_frac) else 0.0)
        if atts is not None:
            lp, li = attention_losses(atts, ind)
            lf = focus_loss(atts, foc)
            loss = loss + (args.attn_weight if phase < 2 else 0.1 * args.attn_weight) * (lp + li)
            loss = loss + args.focus_weight * lf
            acc["lp"] += float(lp)
            acc["li"] += float(li)
            acc["lf"] += float(lf)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        trained_s += time.time() - t0
        em_hist.append(float(em))
        for k, v in (("la", la), ("ll", ll), ("lc", lc), ("em", em)):
            acc[k] += float(v)
        acc["n"] += 1
        if step % 10 == 0:
            n = acc["n"]
            say("step %d  %.1f min  p %.2f  L %d B %d  lr %.2e  ans %.3f  lm %.3f  copy %.3f  EM %.2f"
                "  att-prev %.3f  att-ind %.3f  focus %.3f" % (
                    step, trained_s / 60, p, L, B, lr, acc["la"] / n, acc["ll"] / n, acc["lc"] / n,
                    acc["em"] / n, acc["lp"] / n, acc["li"] / n, acc["lf"] / n))
            acc = {k: 0.0 for k in acc}
            acc["n"] = 0
        if time.time() - last_ckpt > args.ckpt_minutes * 60:
            save()
            last_ckpt = time.time()
    save()
    say("done: step %d, %.1f min trained" % (step, trained_s / 60))


if __name__ == "__main__":
    main()
