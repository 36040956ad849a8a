"""Emulates the CUDA backend's 16-bit storage on stories260K in PyTorch and prints how far its
logits move from llama2.c's fp32 golden run: the source of the tolerances in
tests/kernels/cuda_model_runner_test.cc.

  /usr/bin/python3 tools/device/emulate_rounding.py [--shared ../shared]

Variants (as runtime/exec/cuda_model_runner.cc does them): weights bf16|f16 = every weight matrix
stored rounded and every product's input rounded to the same format, fp32 accumulation; kv
bf16|f16 = K (after RoPE) and V rounded once, before attention reads them. Everything else fp32.
The fp32 run checks this implementation itself against the golden logits.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train"))
from gguf_io import read_gguf  # noqa: E402

TYPES = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}


def rnd(x, t):
    return x if t is None else x.to(t).to(torch.float32)


def rope_adjacent(x, pos, rot_dim, theta=10000.0):
    """GGUF (adjacent-pair) RoPE on the first rot_dim dims of each head. x: [T, H, D]."""
    half = rot_dim // 2
    inv = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / rot_dim)
    ang = pos[:, None].double() * inv[None, :]
    cos, sin = torch.cos(ang).float()[:, None, :], torch.sin(ang).float()[:, None, :]
    a, b = x[..., 0:rot_dim:2], x[..., 1:rot_dim:2]
    out = x.clone()
    out[..., 0:rot_dim:2] = a * cos - b * sin
    out[..., 1:rot_dim:2] = a * sin + b * cos
    return out


def forward(meta, t, ids, wt, kt):
    g = lambda k: meta[k][1]  # noqa: E731
    L, H, KVH = g("llama.block_count"), g("llama.attention.head_count"), g("llama.attention.head_count_kv")
    dim, eps, rot = g("llama.embedding_length"), g("llama.attention.layer_norm_rms_epsilon"), g("llama.rope.dimension_count")
    D = dim // H
    W = {k: torch.from_numpy(v.copy()) for k, v in t.items()}
    mat = lambda k: rnd(W[k], wt)  # noqa: E731
    mm = lambda x, k: rnd(x, wt) @ mat(k).T  # noqa: E731
    norm = lambda x, w: x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w  # noqa: E731
    T = len(ids)
    pos = torch.arange(T)
    x = mat("token_embd.weight")[torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf")).triu(1)
    for layer in range(L):
        p = "blk.%d." % layer
        xn = norm(x, W[p + "attn_norm.weight"])
        q = mm(xn, p + "attn_q.weight").view(T, H, D)
        k = mm(xn, p + "attn_k.weight").view(T, KVH, D)
        v = mm(xn, p + "attn_v.weight").view(T, KVH, D)
        q, k = rope_adjacent(q, pos, rot), rope_adjacent(k, pos, rot)
        k, v = rnd(k, kt), rnd(v, kt)
        k, v = k.repeat_interleave(H // KVH, dim=1), v.repeat_interleave(H // KVH, dim=1)
        att = torch.einsum("thd,shd->hts", q, k) / D ** 0.5 + mask
        a = torch.einsum("hts,shd->thd", att.softmax(-1), v).reshape(T, dim)
        x = x + mm(a, p + "attn_output.weight")
        xn = norm(x, W[p + "ffn_norm.weight"])
        gte, up = mm(xn, p + "ffn_gate.weight"), mm(xn, p + "ffn_up.weight")
        x = x + mm(torch.nn.functional.silu(gte) * up, p + "ffn_down.weight")
    return mm(norm(x, W["output_norm.weight"]), "output.weight")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared"))
    a = ap.parse_args()
    d = os.path.join(a.shared, "data", "models", "stories260K")
    meta, t = read_gguf(os.path.join(d, "stories260K.gguf"))
    ref = json.load(open(os.path.join(d, "stories260K.ref_greedy48.json")))
    fed = ref["token_sequence_fed"][:48]
    gold = [json.loads(line)["logits"] for line in open(os.path.join(d, "stories260K.ref_logits.once_upon_a_time.greedy48.jsonl"))]
    gold = torch.tensor(gold[:48])
    nxt = torch.tensor(ref["full_sequence_incl_last_prediction"][1:49])
    print("| weights | kv | max abs diff | mean abs diff | argmax = golden next token |")
    print("|---|---|---|---|---|")
    for w, k in (("f32", "f32"), ("bf16", "f32"), ("f16", "f32"), ("f32", "bf16"), ("f32", "f16"),
                 ("bf16", "bf16"), ("f16", "f16")):
        with torch.no_grad():
            out = forward(meta, t, fed, TYPES[w], TYPES[k])
        diff = (out - gold).abs()
        agree = int((out.argmax(-1) == nxt).sum())
        print("| %s | %s | %.4f | %.5f | %d/48 |" % (w, k, diff.max(), diff.mean(), agree))


if __name__ == "__main__":
    main()
