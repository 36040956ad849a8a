"""tok512 tokenizer and the retrieval-fixture sample generator.

Tokenizer: the SentencePiece-style BPE of stories260K.gguf (tokenizer.ggml.* metadata): spaces
become U+2581, a U+2581 is prepended (dummy prefix), the text is split into UTF-8 characters
(characters outside the vocabulary become <0xXX> byte tokens), then the adjacent pair whose merge
is in the vocabulary with the highest score is merged repeatedly (ties: leftmost), as llama.cpp's
SPM tokenizer does. No vocabulary token has U+2581 after its first character, so words (a U+2581
and the text up to the next one) tokenize independently; encode() caches them.

Fixture: a haystack window of natural text, needles planted at sentence boundaries at chosen depths,
then one question per needle, each followed by its answer (see TEMPLATES; models/*/niah_format.json
documents the same format for the eval tools). An answer ends with ".".
"""

import glob
import os
import random

import numpy as np

from gguf_io import read_gguf

SHARED = os.environ.get("FUNNEL_SHARED_DATA_DIR", "/work/shared/data")
VOCAB_GGUF = os.path.join(SHARED, "models/stories260K/stories260K.gguf")
BOS, EOS = 1, 2
SP = "\u2581"


class Tokenizer:
    def __init__(self, gguf_path=VOCAB_GGUF):
        meta, _ = read_gguf(gguf_path)
        self.meta = {k: v for k, v in meta.items() if k.startswith("tokenizer.")}
        self.tokens = meta["tokenizer.ggml.tokens"][1][1]
        self.scores = meta["tokenizer.ggml.scores"][1][1]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.cache = {}

    def _word(self, w):
        ids = self.cache.get(w)
        if ids is not None:
            return ids
        syms = []
        for ch in w:
            if ch in self.ids:
                syms.append(ch)
            else:
                syms.extend("<0x%02X>" % b for b in ch.encode("utf-8"))
        while len(syms) > 1:
            best, bi = None, -1
            for i in range(len(syms) - 1):
                if syms[i].startswith("<0x") or syms[i + 1].startswith("<0x"):
                    continue
                j = self.ids.get(syms[i] + syms[i + 1])
                if j is not None and (best is None or self.scores[j] > best):
                    best, bi = self.scores[j], i
            if bi < 0:
                break
            syms[bi:bi + 2] = [syms[bi] + syms[bi + 1]]
        ids = [self.ids[s] for s in syms]
        self.cache[w] = ids
        return ids

    def encode(self, text, bos=False, dummy_prefix=True):
        """Token ids of text; dummy_prefix prepends a space as SentencePiece does."""
        s = text.replace(" ", SP)
        if dummy_prefix:
            s = SP + s
        out = [BOS] if bos else []
        start = 0
        for i in range(1, len(s) + 1):
            if i == len(s) or s[i] == SP:
                if i > start:
                    out.extend(self._word(s[start:i]))
                start = i
        return out

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            t = self.tokens[i]
            if t.startswith("<0x") and len(t) == 6:
                bs.append(int(t[3:5], 16))
            elif i in (0, 1, 2):
                continue
            else:
                bs.extend(t.replace(SP, " ").encode("utf-8"))
        return bs.decode("utf-8", errors="replace")


# Needle kinds: needle text (planted with a leading space), question (follows the haystack), answer.
TEMPLATES = {
    "passkey": {
        "needle": " The pass key is {value}. Remember it. {value} is the pass key.",
        "question": "\nWhat is the pass key? The pass key is",
        "answer": " {value}.",
    },
    "kv": {
        "needle": " The special magic number for {key} is {value}.",
        "question": "\nWhat is the special magic number for {key}? The special magic number for {key} is",
        "answer": " {value}.",
    },
    "city": {
        "needle": " The best thing to do in {key} is {value}.",
        "question": "\nWhat is the best thing to do in {key}? The best thing to do in {key} is",
        "answer": " {value}.",
    },
}
KV_KEYS = ("apple river garden silver window castle forest candle mirror rocket tiger violin "
           "pepper island ladder marble ocean pencil rabbit summer thunder tulip wagon zebra "
           "anchor bottle cactus dragon feather glacier hammer jacket kettle lemon meadow "
           "needle orange parrot quartz saddle").split()
CITIES = ("San Francisco, Paris, Tokyo, Cairo, Lima, Oslo, Rome, Berlin, Madrid, Sydney, Toronto, "
          "Dublin, Vienna, Prague, Lisbon, Athens, Seoul, Boston, Chicago, Denver, Nairobi, Mumbai, "
          "Bangkok, Istanbul, Havana, Quito, Warsaw, Zurich, Helsinki, Montreal").split(", ")
ACTIVITIES = ["eat a sandwich and sit in the park", "ride a bike by the river", "visit the old museum",
              "watch the sunset from the hill", "drink coffee in a small cafe", "swim in the cold lake",
              "walk along the harbor", "read a book in the library", "climb the tall tower",
              "dance in the main square", "buy bread at the market", "take a boat to the island",
              "listen to music in the garden", "fly a kite on the beach", "paint the red bridge",
              "eat noodles at night", "play chess with the old men", "see the tall trees",
              "feed the ducks in the pond", "sing songs by the fire"]


def digit_value(rng, n):
    """n distinct decimal digits, not starting with 0 (answer tokens without repeats)."""
    first = rng.choice("123456789")
    rest = rng.sample([d for d in "0123456789" if d != first], n - 1)
    return first + "".join(rest)


def make_fact(rng, kind, used_keys):
    if kind == "passkey":
        return {"kind": kind, "key": "", "value": digit_value(rng, 5)}
    if kind == "kv":
        key = rng.choice([k for k in KV_KEYS if k not in used_keys])
        return {"kind": kind, "key": key, "value": digit_value(rng, rng.choice((4, 5)))}
    key = rng.choice([k for k in CITIES if k not in used_keys])
    return {"kind": kind, "key": key, "value": rng.choice(ACTIVITIES)}


def render(fact, part):
    return TEMPLATES[fact["kind"]][part].format(key=fact["key"], value=fact["value"])


def corpus_texts(split):
    """Natural-text documents for haystacks. split 'train': corpora + 40 PG essays; 'eval': 9 held-out essays."""
    essays = sorted(glob.glob(os.path.join(SHARED, "eval/niah/PaulGrahamEssays/*.txt")))
    if split == "eval":
        files = essays[40:]
    else:
        files = essays[:40] + [os.path.join(SHARED, "corpora", f) for f in
                               ("tinyshakespeare.txt", "sotu.txt", "botchan.txt", "wikitext-2-raw/wiki.test.raw")]
    docs = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            t = fh.read()
        docs.append(" ".join(t.split()))  # one line, single spaces: clean sentence stream
    return docs


def load_corpus(tok, split, cache_dir):
    """List of int16 token arrays, one per document (cached as .npz in cache_dir)."""
    path = os.path.join(cache_dir, "corpus_%s.npz" % split)
    if os.path.exists(path):
        z = np.load(path)
        return [z[k] for k in sorted(z.files, key=int)]
    arrs = [np.array(tok.encode(d), dtype=np.int16) for d in corpus_texts(split)]
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, **{str(i): a for i, a in enumerate(arrs)})
    return arrs


class FixtureSampler:
    """Draws token-level training/eval samples.

    sample(length, ...) returns (ids, weights_answer, weights_copy, n_answers) where ids has exactly
    `length` tokens (BOS + haystack with needles + questions + answers); weights mark target
    tokens (weights[t] > 0: ids[t] is a target, predicted from ids[:t]); an answer's weights sum to 1.
    """

    def __init__(self, tok, docs, seed):
        self.tok, self.docs, self.rng = tok, docs, random.Random(seed)
        self.city_prob = 1.0  # probability that a drawn "city" fact stays a city (else kv)
        self.single_prob = 0.4  # probability of a one-needle sample (else 1-4 needles of mixed kinds)
        self.far_prob = 0.0  # probability that a drawn depth is confined to the first half (far from the question)
        self.edge_prob = 0.0  # probability that a drawn depth is at an end: [0, 0.12] or [0.9, 1]
        self.dot = tok.ids["."]
        self.lens = np.array([len(d) for d in docs], dtype=np.float64)

    def window(self, n):
        p = self.lens / self.lens.sum()
        d = self.docs[np.random.default_rng(self.rng.randrange(1 << 30)).choice(len(self.docs), p=p)]
        if len(d) <= n:
            return [int(x) for x in d] * (n // len(d)) + [int(x) for x in d[:n % len(d)]]
        s = self.rng.randrange(0, len(d) - n)
        return [int(x) for x in d[s:s + n]]

    def boundary(self, hay, pos):
        """Position just after the nearest '.' at or before pos (or pos if none within 80 tokens)."""
        for i in range(pos, max(-1, pos - 80), -1):
            if i < len(hay) and i > 0 and hay[i - 1] == self.dot:
                return i
        return pos

    @staticmethod
    def edge_depth(rng):
        """A depth at either end of the haystack: [0, 0.12] or [0.9, 1], equally likely."""
        return rng.uniform(0.0, 0.12) if rng.random() < 0.5 else rng.uniform(0.9, 1.0)

    def fact_tokens(self, f):
        return sum(len(self.tok.encode(render(f, part), dummy_prefix=False)) for part in ("needle", "question", "answer"))

    def sample(self, length, facts=None, depths=None, copy_spans=0):
        rng, tok = self.rng, self.tok
        if facts is None:
            facts, used = [], set()
            r = rng.random()
            if r < self.single_prob:
                kinds = [rng.choice(("passkey", "kv", "city"))]
            else:
                r = rng.random()
                kinds = ["passkey"] if r < 0.2 else (["kv", "city", "kv", "city"][:rng.randint(1, 4)]
                                                 if r < 0.75 else ["passkey", "kv", "city"][:rng.randint(2, 3)])
            for k in kinds:
                if k == "city" and rng.random() >= self.city_prob:
                    k = "kv"
                f = make_fact(rng, k, used)
                used.add(f["key"])
                facts.append(f)
            # keep at least a third of the sample as haystack: drop facts that do not fit
            while len(facts) > 1 and sum(self.fact_tokens(f) for f in facts) > (2 * length) // 3:
                facts.pop()
        if depths is None:
            depths = [rng.random() for _ in facts]
            if self.far_prob > 0:
                depths = [d * 0.5 if rng.random() < self.far_prob else d for d in depths]
            if self.edge_prob > 0:
                depths = [self.edge_depth(rng) if rng.random() < self.edge_prob else d for d in depths]
        needles = [tok.encode(render(f, "needle"), dummy_prefix=False) for f in facts]
        order = list(range(len(facts)))
        rng.shuffle(order)
        qa = []
        for i in order:
            q = tok.encode(render(facts[i], "question"), dummy_prefix=False)
            a = tok.encode(render(facts[i], "answer"), dummy_prefix=False)
            qa.append((q, a))
        fixed = 1 + sum(map(len, needles)) + sum(len(q) + len(a) for q, a in qa)
        n_hay = length - fixed
        if n_hay < 8:
            raise ValueError("length %d too short for %d facts" % (length, len(facts)))
        hay = self.window(n_hay)
        wcopy = [0.0] * len(hay)
        for _ in range(copy_spans):  # auxiliary copying: repeat an earlier span later (overwrite)
            span = rng.randint(8, 24)
            if n_hay < 4 * span:
                break
            src = rng.randrange(0, n_hay // 2 - span)
            dst = rng.randrange(src + span + 1, n_hay - span)
            hay[dst:dst + span] = hay[src:src + span]
            for j in range(dst + 1, dst + span):
                wcopy[j] = 1.0
        # plant needles, deepest first so earlier insert positions stay valid
        ins = sorted(((self.boundary(hay, int(round(d * n_hay))), i) for i, d in enumerate(depths)), reverse=True)
        for pos, i in ins:
            hay[pos:pos] = needles[i]
            wcopy[pos:pos] = [0.0] * len(needles[i])
        ids = [BOS] + hay
        # final needle spans in ids (shallowest first; BOS shifts by one)
        span_of, offset = {}, 1
        for pos, i in reversed(ins):
            span_of[i] = range(pos + offset, pos + offset + len(needles[i]))
            offset += len(needles[i])
        self.last_focus = []  # (question positions, its needle's positions), for attention losses
        wa = [0.0] * len(ids)
        wc = [0.0] + wcopy
        for (q, a), i in zip(qa, order):
            self.last_focus.append((range(len(ids), len(ids) + len(q)), span_of[i]))
            ids += q
            wa += [0.0] * len(q)
            wc += [0.0] * len(q)
            ids += a
            wa += [1.0 / len(a)] * len(a)  # each answer weighs 1 in total
            wc += [0.0] * len(a)
        assert len(ids) == length, (len(ids), length)
        assert all(ids[r.start:r.stop] == needles[i] for i, r in span_of.items())
        # shift: weight at position t refers to predicting ids[t] from prefix ids[:t]
        return ids, wa, wc, len(qa)


def niah_format(tok):
    """The fixture's prompt format as a JSON-able dict (written beside the GGUF as niah_format.json)."""
    rng = random.Random(5)
    examples = []
    for kind in ("passkey", "kv", "city"):
        f = make_fact(rng, kind, set())
        ans = render(f, "answer")
        examples.append({"kind": kind, "needle": render(f, "needle"), "question": render(f, "question"),
                         "answer": ans, "answer_ids": tok.encode(ans, dummy_prefix=False)})
    return {
        "description": "Retrieval fixture prompt format: BOS + haystack (natural English text, whitespace collapsed "
                       "to single spaces) with the needle inserted at a sentence boundary (just after the last '.' "
                       "at or before depth% of the haystack tokens; the needle text starts with a space), then the "
                       "question (starts with a newline, ends with the needle's own lead-in, no trailing space). "
                       "Greedy decoding continues with the answer, which starts with a space and ends with '.'. "
                       "No chat template.",
        "templates": TEMPLATES,
        "values": {"passkey": "5 distinct digits, first not 0", "kv": "4 or 5 distinct digits, first not 0",
                   "kv_keys": list(KV_KEYS), "cities": list(CITIES), "activities": ACTIVITIES},
        "training_haystack": "40 of the 49 Paul Graham essays (sorted names, first 40), tinyshakespeare, sotu, "
                             "botchan, wikitext-2 test; held-out eval haystack: the last 9 essays",
        "stop": ".",
        "max_new_tokens": 48,
        "scoring": "exact match: the generated text up to and including the first '.' equals the answer; "
                   "word overlap (reference harness): fraction of the answer's words present in the response",
        "classic_needle": {"needle": " The best thing to do in San Francisco is eat a sandwich and sit in Dolores "
                                     "Park on a sunny day.",
                           "question": "\nWhat is the best thing to do in San Francisco? The best thing to do in "
                                       "San Francisco is",
                           "answer": " eat a sandwich and sit in Dolores Park on a sunny day."},
        "examples": examples,
    }
