"""Checks an exported GGUF against the PyTorch model through `funnel run`.

Usage: /usr/bin/python3 tools/train/check_funnel.py --model models/X/X.gguf [--funnel PATH] \
           [--prompt TEXT | --prompt-json FILE] [--max-tokens N] [-- extra funnel run flags]

1. `funnel tokenize` must give the same ids as fixture_data.Tokenizer (BOS + text).
2. `funnel run --dump-logits` at full cache: every fed position's logits must match the PyTorch
   logits of the GGUF's weights within --tol (default 1e-3 absolute), and the greedy tokens must agree.
With a --prompt-json from eval_fixture.py --write-prompts it also checks that funnel's greedy answer
equals the fixture answer; with a compressing --kv-method (e.g. -- --kv-method pyramidkv --kv-budget 64)
only that (logits of a compressed cache are not expected to match the full-cache model).
Exit status 1 on any mismatch.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_gguf import load_model  # noqa: E402
from fixture_data import Tokenizer  # noqa: E402


def funnel_run(funnel, model, ids, max_tokens, extra, dump):
    cmd = [funnel, "run", "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--max-tokens",
           str(max_tokens), "--json", "--ignore-eos"] + extra
    if dump:
        cmd += ["--dump-logits", dump]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--funnel", default=os.environ.get("FUNNEL", "build/bin/funnel"))
    ap.add_argument("--prompt", default="Once upon a time, the pass key is 71432. Remember it.")
    ap.add_argument("--prompt-json")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("extra", nargs="*", help="extra `funnel run` flags (after --)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = Tokenizer()
    model = load_model(args.model)
    ok = True
    if args.prompt_json:
        with open(args.prompt_json) as f:
            s = json.load(f)
        text, ids = s["prompt"], s["prompt_ids"]
    else:
        text = args.prompt
        ids = tok.encode(text, bos=True)
    fids = subprocess.run([args.funnel, "tokenize", "--model", args.model, "--text", text],
                          capture_output=True, text=True, check=True).stdout
    fids = json.loads(fids.strip().splitlines()[-1])
    same_tok = fids == ids
    ok &= same_tok
    print("tokenize: %d tokens, %s" % (len(ids), "same ids" if same_tok else "DIFFERENT ids"))
    if args.prompt_json:
        n = len(s["answer_ids"])
        r = funnel_run(args.funnel, args.model, ids, n, args.extra, None)
        hit = r["output_ids"][:n] == s["answer_ids"]
        ok &= hit
        print("funnel %s: answer %r, expected %r -> %s (kv per layer %s)" % (
            " ".join(args.extra), tok.decode(r["output_ids"]), s["answer"], "EXACT" if hit else "miss",
            r.get("kv", {}).get("per_layer_tokens")))
        if "--kv-method" in args.extra and "full" not in args.extra:
            sys.exit(0 if ok else 1)
    with tempfile.TemporaryDirectory() as d:
        dump = os.path.join(d, "logits.jsonl")
        r = funnel_run(args.funnel, args.model, ids, args.max_tokens, args.extra, dump)
        rows = [json.loads(line) for line in open(dump)]
    fed = ids + r["output_ids"][:-1]
    with torch.no_grad():
        ref = model(torch.tensor([fed]))[0].numpy()
    got = np.array([row["logits"] for row in sorted(rows, key=lambda x: x["pos"])])
    n = min(len(got), len(ref))
    diff = float(np.abs(got[:n] - ref[:n]).max())
    greedy = [int(x) for x in ref[len(ids) - 1:].argmax(-1)]
    same_greedy = greedy == r["output_ids"]
    ok &= diff <= args.tol and same_greedy and n == len(fed)
    print("logits: %d positions, max |funnel - torch| = %.2e (tol %.0e); greedy %s" % (
        n, diff, args.tol, "same" if same_greedy else "DIFFERENT"))
    print("funnel continuation: %r" % tok.decode(r["output_ids"]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
