"""Writes a golden run of an exported GGUF, computed by PyTorch on the GGUF's own weights, for the
C++ test tests/unit/exec/trained_models_test.cc (Funnel's tokenizer and CPU runner must agree).

Usage: /usr/bin/python3 tools/train/write_golden.py --model models/X/X.gguf --prompt TEXT \
           [--tokens 32] [--out models/X/golden.json]

golden.json: {"prompt", "prompt_ids" (BOS + tok512 ids, fixture_data.Tokenizer), "greedy" (the next
--tokens ids by argmax, fed back one by one), "logits_prompt" (the vocabulary logits after the
prompt's last token), "logits_last" (after the last greedy token's predecessor, i.e. the logits
that chose greedy[-1]), "min_margin" (smallest top-1 minus top-2 logit on the greedy path: a near
tie would make the C++ comparison fragile, so the tool warns below 0.01)}.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_gguf import load_model  # noqa: E402
from fixture_data import BOS, Tokenizer  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    ids = [BOS] + Tokenizer().encode(args.prompt)
    seq = list(ids)
    margin = float("inf")  # the smallest top-1 minus top-2 logit along the greedy path
    with torch.no_grad():
        for _ in range(args.tokens):
            logits = model(torch.tensor([seq]))[0]
            top = torch.topk(logits[-1], 2).values
            margin = min(margin, float(top[0] - top[1]))
            seq.append(int(logits[-1].argmax()))
    greedy = seq[len(ids):]
    out = {"prompt": args.prompt, "prompt_ids": ids, "greedy": greedy,
           "logits_prompt": [round(float(x), 5) for x in logits[len(ids) - 1]],
           "logits_last": [round(float(x), 5) for x in logits[-1]], "min_margin": round(margin, 5)}
    path = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)), "golden.json")
    with open(path, "w") as f:
        json.dump(out, f)
    print("wrote %s: %d prompt ids, smallest top-2 margin %.4f, greedy %r" % (
        path, len(ids), margin, Tokenizer().decode(greedy)))
    if margin < 1e-2:
        print("warning: a near tie on the greedy path; choose another prompt", file=sys.stderr)


if __name__ == "__main__":
    main()
