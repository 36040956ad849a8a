"""Exact-match accuracy of the retrieval fixture at full cache (PyTorch), by length x depth.

Usage: nice -n 19 /usr/bin/python3 tools/train/eval_fixture.py --model models/funnel-fixture-1m/funnel-fixture-1m.gguf \
           --lengths 1024 2048 --depths 11 --per-cell 6 --json .train/eval.json

Held-out samples: haystacks from the 9 Paul Graham essays not used in training, one needle per
sample (kinds cycle passkey / kv / city), new random values, depth d placing the needle at the
sentence boundary at or before d% of the haystack. A sample is right when greedy decoding
reproduces every answer token (" 71432." etc.); with teacher forcing this equals "argmax at every
answer position is the answer token", which is what is computed. --write-prompts DIR also writes
each sample as text (prompt, answer, token ids) for checks through `funnel run`.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_gguf import load_model  # noqa: E402
from fixture_data import SP, FixtureSampler, Tokenizer, load_corpus, make_fact  # noqa: E402

KINDS = ("passkey", "kv", "city")


class EvalSampler(FixtureSampler):
    def window(self, n):
        # start at a word start so that decode -> encode (with the dummy prefix) round-trips
        for _ in range(100):
            w = super().window(n)
            if self.tok.tokens[w[0]].startswith(SP):
                return w
        return w


def samples(tok, docs, length, depth, n, seed):
    s = EvalSampler(tok, docs, seed)
    out = []
    for i in range(n):
        fact = make_fact(s.rng, KINDS[i % 3], set())
        ids, wa, _, _ = s.sample(length, facts=[fact], depths=[depth])
        out.append((ids, wa, fact))
    return out


@torch.no_grad()
def exact_match(model, batch):
    ids = torch.tensor([b[0] for b in batch])
    wa = torch.tensor([b[1] for b in batch])[:, 1:]
    pred = model(ids[:, :-1]).argmax(-1)
    wrong = ((pred != ids[:, 1:]).float() * wa).sum(1)
    return [bool(w == 0) for w in wrong]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="ckpt.pt or .gguf")
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--depths", type=int, default=11, help="number of depths in linspace(0, 100)")
    ap.add_argument("--per-cell", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=777)
    ap.add_argument("--json")
    ap.add_argument("--write-prompts", help="directory for text prompts (first sample of each cell)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    tok = Tokenizer()
    docs = load_corpus(tok, "eval", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../.train"))
    depths = [round(100 * i / (args.depths - 1)) for i in range(args.depths)]
    res = {"model": args.model, "per_cell": args.per_cell, "cells": []}
    for L in args.lengths:
        row = []
        for d in depths:
            batch = samples(tok, docs, L, d / 100.0, args.per_cell, args.seed + 1000 * L + d)
            ok = []
            for i in range(0, len(batch), 2):
                ok += exact_match(model, batch[i:i + 2])
            by_kind = {k: [o for o, b in zip(ok, batch) if b[2]["kind"] == k] for k in KINDS}
            cell = {"length": L, "depth": d, "em": sum(ok) / len(ok), "n": len(ok),
                    "by_kind": {k: (sum(v), len(v)) for k, v in by_kind.items()}}
            res["cells"].append(cell)
            row.append(cell["em"])
            print("L %d depth %3d  EM %.2f  %s" % (L, d, cell["em"], cell["by_kind"]), flush=True)
            if args.write_prompts:
                os.makedirs(args.write_prompts, exist_ok=True)
                ids, wa, fact = batch[0]
                n_ans = sum(1 for w in wa if w > 0)
                prompt = tok.decode(ids[1:len(ids) - n_ans])[1:]  # drop the dummy-prefix space
                with open(os.path.join(args.write_prompts, "L%d_d%03d.json" % (L, d)), "w") as f:
                    json.dump({"prompt": prompt, "answer": tok.decode(ids[len(ids) - n_ans:]),
                               "prompt_ids": ids[:len(ids) - n_ans], "answer_ids": ids[len(ids) - n_ans:],
                               "fact": fact}, f)
        print("L %d mean EM %.3f" % (L, sum(row) / len(row)), flush=True)
    allem = [c["em"] for c in res["cells"]]
    res["mean_em"] = sum(allem) / len(allem)
    print("overall EM %.3f" % res["mean_em"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
