"""Exports a train_fixture.py checkpoint to a GGUF `llama` file with the tok512 tokenizer.

Usage: /usr/bin/python3 tools/train/export_gguf.py --ckpt .train/fixture/ckpt.pt \
           --out models/funnel-fixture-1m/funnel-fixture-1m.gguf --name funnel-fixture-1m [--context 4096] [--f16]

Tensor names and metadata keys are llama.cpp's (what runtime/model/model_config.cc and
model_weights.cc read). Q/K need no permutation: the model uses the adjacent-pair RoPE layout.
The tokenizer.ggml.* keys are copied from stories260K.gguf. Also writes niah_format.json beside the
GGUF (the fixture's needle/question/answer format, fixture_data.niah_format) unless --no-niah-format.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io as g  # noqa: E402
import json  # noqa: E402

from fixture_data import VOCAB_GGUF, Tokenizer, niah_format  # noqa: E402
from model import Config, Llama  # noqa: E402

_NAMES = {"attn_norm.weight": "attn_norm.weight", "wq.weight": "attn_q.weight", "wk.weight": "attn_k.weight",
          "wv.weight": "attn_v.weight", "wo.weight": "attn_output.weight", "ffn_norm.weight": "ffn_norm.weight",
          "w1.weight": "ffn_gate.weight", "w3.weight": "ffn_up.weight", "w2.weight": "ffn_down.weight"}


def gguf_tensors(state):
    out = {"token_embd.weight": state["tok_embeddings.weight"], "output_norm.weight": state["norm.weight"],
           "output.weight": state["output.weight"]}
    for k, v in state.items():
        if k.startswith("layers."):
            _, i, rest = k.split(".", 2)
            out["blk.%s.%s" % (i, _NAMES[rest])] = v
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in out.items()}


def load_model(path):
    """A Llama from a checkpoint (.pt) or from an exported GGUF (tensor names mapped back)."""
    if path.endswith(".pt"):
        ck = torch.load(path, map_location="cpu")
        m = Llama(Config(**ck["config"]))
        m.load_state_dict(ck["model"])
        return m.eval()
    meta, t = g.read_gguf(path)
    get = lambda k: meta[k][1]  # noqa: E731
    c = Config(vocab_size=t["token_embd.weight"].shape[0], dim=get("llama.embedding_length"),
               n_layers=get("llama.block_count"), n_heads=get("llama.attention.head_count"),
               n_kv_heads=get("llama.attention.head_count_kv"), ffn_dim=get("llama.feed_forward_length"),
               rope_theta=meta.get("llama.rope.freq_base", (0, 10000.0))[1],
               norm_eps=get("llama.attention.layer_norm_rms_epsilon"), context_length=get("llama.context_length"))
    m = Llama(c)
    inv = {v: k for k, v in _NAMES.items()}
    sd = {"tok_embeddings.weight": t["token_embd.weight"], "norm.weight": t["output_norm.weight"],
          "output.weight": t["output.weight"]}
    for k, v in t.items():
        if k.startswith("blk."):
            _, i, rest = k.split(".", 2)
            sd["layers.%s.%s" % (i, inv[rest])] = v
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    return m.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--f16", action="store_true", help="store 2-D tensors as F16")
    ap.add_argument("--no-niah-format", action="store_true",
                    help="do not write niah_format.json (models that are not retrieval fixtures)")
    args = ap.parse_args()
    ck = torch.load(args.ckpt, map_location="cpu")
    c = Config(**ck["config"])
    vmeta, _ = g.read_gguf(VOCAB_GGUF)
    meta = {
        "general.architecture": (g.STRING, "llama"),
        "general.name": (g.STRING, args.name),
        "llama.context_length": (g.U32, args.context),
        "llama.embedding_length": (g.U32, c.dim),
        "llama.feed_forward_length": (g.U32, c.ffn_dim),
        "llama.block_count": (g.U32, c.n_layers),
        "llama.attention.head_count": (g.U32, c.n_heads),
        "llama.attention.head_count_kv": (g.U32, c.n_kv_heads),
        "llama.rope.dimension_count": (g.U32, c.head_dim),
        "llama.rope.freq_base": (g.F32, c.rope_theta),
        "llama.attention.layer_norm_rms_epsilon": (g.F32, c.norm_eps),
    }
    for k, v in vmeta.items():
        if k.startswith("tokenizer."):
            meta[k] = v
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    g.write_gguf(args.out, meta, gguf_tensors(ck["model"]), f16_matrices=args.f16)
    if not args.no_niah_format:
        fmt = os.path.join(os.path.dirname(os.path.abspath(args.out)), "niah_format.json")
        with open(fmt, "w") as f:
            json.dump(niah_format(Tokenizer()), f, indent=1, ensure_ascii=False)
    print("wrote %s (%d bytes), step %d" % (args.out, os.path.getsize(args.out), ck["step"]))


if __name__ == "__main__":
    main()
