"""What train_fixture.py and train_text.py share: model-shape flags, the run folder's log, and
starting from scratch or resuming from <out>/ckpt.pt (model, optimizer, step, trained seconds)."""

import os

import torch

from model import Config, Llama


def add_shape_args(ap, dim, layers, heads, kv_heads, ffn):
    """--dim --layers --heads --kv-heads --ffn with these defaults."""
    ap.add_argument("--dim", type=int, default=dim)
    ap.add_argument("--layers", type=int, default=layers)
    ap.add_argument("--heads", type=int, default=heads)
    ap.add_argument("--kv-heads", type=int, default=kv_heads)
    ap.add_argument("--ffn", type=int, default=ffn)


def open_run(out):
    """Creates the run folder; returns (checkpoint path, say) where say(msg) prints msg and
    appends it to <out>/log.txt."""
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "log.txt"), "a")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    return os.path.join(out, "ckpt.pt"), say


def load_or_init(ckpt_path, args, make_opt, device="cpu"):
    """(model, optimizer, checkpoint dict or None). A new model takes the shape flags; a resumed
    one the checkpoint's config, weights and optimizer state. make_opt(params) builds the optimizer."""
    ck = torch.load(ckpt_path, map_location="cpu") if os.path.exists(ckpt_path) else None
    cfg = Config(**ck["config"]) if ck else Config(dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                                                   n_kv_heads=args.kv_heads, ffn_dim=args.ffn)
    model = Llama(cfg)
    if ck:
        model.load_state_dict(ck["model"])
    model.to(device)
    opt = make_opt(model.parameters())
    if ck:
        opt.load_state_dict(ck["opt"])
    return model, opt, ck
