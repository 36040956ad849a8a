"""Independent PyTorch reference for Hugging Face model directories.

Nothing here shares code with Funnel: safetensors files are read and written by hand from the
format's specification, and the forward pass follows transformers' modeling_llama / modeling_qwen2
(half-split "rotate_half" RoPE, repeat_kv GQA, q/k/v biases for Qwen2, rope_scaling "llama3" as
in transformers' _compute_llama3_parameters).

1. `funnel model convert` of stories260K.gguf gives a directory whose weights, run through this
   reference, reproduce llama2.c's golden logits (so the Q/K rows were un-permuted correctly and
   config.json is right).
2. Random tiny Llama-3.1-style (llama3 rope scaling, tied embeddings), Qwen2 (q/k/v biases) and
   Mistral models written here as HF directories give, through `funnel run --dump-logits`, the
   logits this reference computes (checks Funnel's config parsing, safetensors reading, Q/K
   permutation at load, biases and scaled RoPE).

Environment: FUNNEL_BIN (the funnel executable), FUNNEL_SHARED_DATA (../shared/data).
"""

import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

import numpy as np
import torch

SHARED = os.environ.get("FUNNEL_SHARED_DATA", os.path.join(os.path.dirname(__file__),
                                                           "../../../../shared/data"))
FUNNEL = os.environ.get("FUNNEL_BIN", "funnel")
STORIES = os.path.join(SHARED, "models/stories260K")

DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2)}


def read_safetensors(path):
    """name -> float32 torch tensor, by the format spec (u64 header length, JSON, data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = data[begin:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype=DTYPES[info["dtype"]][0]).astype(np.float32)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out, header


def write_safetensors(path, tensors):
    """tensors: name -> float32 torch tensor, written as F32."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def inv_freq(cfg):
    """transformers' default / linear / llama3 RoPE inverse frequencies (float32)."""
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base = cfg.get("rope_theta", 10000.0)
    f = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = cfg.get("rope_scaling")
    if not rs:
        return f
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return f / rs["factor"]
    assert kind == "llama3", kind
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / f
    f_llama = torch.where(wavelen > low_wavelen, f / factor, f)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * f_llama / factor + smooth * f_llama
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, f_llama)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def forward(cfg, w, ids, qkv_bias):
    """Logits [len(ids), vocab] of an HF Llama/Mistral/Qwen2 model, full causal attention."""
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = d // nh
    eps = cfg["rms_norm_eps"]
    t = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq(cfg))
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        proj = {}
        for name in "qkv":
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T
            if qkv_bias:
                y = y + w[p + f"self_attn.{name}_proj.bias"]
            proj[name] = y
        q = proj["q"].view(t, nh, hd)
        k = proj["k"].view(t, nkv, hd)
        v = proj["v"].view(t, nkv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + mask
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(t, nh * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return x @ head.T


def load_golden():
    with open(os.path.join(STORIES, "stories260K.ref_greedy48.json")) as f:
        meta = json.load(f)
    logits = {}
    with open(os.path.join(STORIES,
                           "stories260K.ref_logits.once_upon_a_time.greedy48.jsonl")) as f:
        for line in f:
            if line.strip():
                j = json.loads(line)
                logits[j["pos"]] = j["logits"]
    seq = meta["full_sequence_incl_last_prediction"][:48]
    return seq, torch.tensor([logits[p] for p in range(48)])


class HfReferenceTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.manual_seed(20240601)
        cls.tmp = tempfile.mkdtemp(prefix="hf_reference_test_")
        cls.converted = os.path.join(cls.tmp, "stories260K-hf")
        subprocess.run([FUNNEL, "model", "convert", "--from",
                        os.path.join(STORIES, "stories260K.gguf"), "--to-hf", cls.converted],
                       check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_converted_stories260k_matches_golden_logits(self):
        with open(os.path.join(self.converted, "config.json")) as f:
            cfg = json.load(f)
        weights, header = read_safetensors(os.path.join(self.converted, "model.safetensors"))
        self.assertEqual(header["__metadata__"], {"format": "pt"})
        self.assertEqual(weights["model.layers.0.self_attn.q_proj.weight"].shape, (64, 64))
        self.assertEqual(weights["model.layers.0.self_attn.k_proj.weight"].shape, (32, 64))
        seq, golden = load_golden()
        with torch.no_grad():
            logits = forward(cfg, weights, seq, qkv_bias=False)
        diff = (logits - golden).abs().max().item()
        print(f"converted stories260K vs llama2.c golden: max |diff| {diff:.3g}")
        self.assertLess(diff, 1e-4)
        self.assertEqual(logits.argmax(-1).tolist(),
                         load_golden_next_tokens())

    def test_unpermuted_weights_are_needed(self):
        # Control: the same reference with the GGUF (adjacent-pair) row order fails badly, so the
        # test above really checks the un-permutation.
        with open(os.path.join(self.converted, "config.json")) as f:
            cfg = json.load(f)
        weights, _ = read_safetensors(os.path.join(self.converted, "model.safetensors"))
        hd = 8
        for name, t in list(weights.items()):
            if "q_proj" in name or "k_proj" in name:
                heads = t.shape[0] // hd
                # HF row j*hd/2+i -> GGUF row 2i+j (llama.cpp's permute)
                weights[name] = t.view(heads, 2, hd // 2, -1).transpose(1, 2).reshape(t.shape)
        seq, golden = load_golden()
        with torch.no_grad():
            logits = forward(cfg, weights, seq, qkv_bias=False)
        self.assertGreater((logits - golden).abs().max().item(), 0.1)

    def test_funnel_run_on_converted_dir_reproduces_golden_greedy_run(self):
        r = subprocess.run([FUNNEL, "run", "--model", self.converted, "--prompt",
                            "Once upon a time", "--max-tokens", "44", "--json"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        with open(os.path.join(STORIES, "stories260K.ref_greedy48.json")) as f:
            meta = json.load(f)
        self.assertEqual(out["prompt_ids"], meta["prompt_ids_with_bos"])
        self.assertEqual(out["prompt_ids"] + out["output_ids"],
                         meta["full_sequence_incl_last_prediction"])

    def test_funnel_run_chat_and_errors(self):
        # No chat template in the files: --chat uses the plain format; a bad name lists the valid
        # ones; a lone safetensors file is refused with a hint.
        r = subprocess.run([FUNNEL, "run", "--model", self.converted, "--prompt", "Hi", "--chat",
                            "--max-tokens", "1", "--json"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["prompt_ids"][0], 1)
        r = subprocess.run([FUNNEL, "run", "--model", self.converted, "--prompt", "Hi",
                            "--chat-template", "nope"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("chatml", r.stderr)
        r = subprocess.run([FUNNEL, "run", "--model",
                            os.path.join(self.converted, "model.safetensors"), "--prompt", "Hi"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("pass the directory", r.stderr)

    def run_funnel_logits(self, model_dir, ids):
        dump = os.path.join(self.tmp, "logits.jsonl")
        r = subprocess.run([FUNNEL, "run", "--model", model_dir, "--prompt-ids",
                            ",".join(map(str, ids)), "--max-tokens", "1", "--json",
                            "--dump-logits", dump], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = {}
        with open(dump) as f:
            for line in f:
                j = json.loads(line)
                rows[j["pos"]] = j["logits"]
        return torch.tensor([rows[p] for p in range(len(ids))])

    def make_random_model(self, name, cfg, qkv_bias):
        d = os.path.join(self.tmp, name)
        os.makedirs(d)
        hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        q_dim = cfg["num_attention_heads"] * hd
        kv_dim = cfg["num_key_value_heads"] * hd
        D, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]

        def rnd(*shape, scale=None):
            s = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
            return (torch.rand(*shape) * 2 - 1) * s

        w = {"model.embed_tokens.weight": rnd(V, D, scale=1.0)}
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = 1 + rnd(D, scale=0.2)
            w[p + "self_attn.q_proj.weight"] = rnd(q_dim, D, scale=0.5)
            w[p + "self_attn.k_proj.weight"] = rnd(kv_dim, D, scale=0.5)
            w[p + "self_attn.v_proj.weight"] = rnd(kv_dim, D)
            w[p + "self_attn.o_proj.weight"] = rnd(D, q_dim)
            if qkv_bias:
                w[p + "self_attn.q_proj.bias"] = rnd(q_dim, scale=0.5)
                w[p + "self_attn.k_proj.bias"] = rnd(kv_dim, scale=0.5)
                w[p + "self_attn.v_proj.bias"] = rnd(kv_dim, scale=0.5)
            w[p + "post_attention_layernorm.weight"] = 1 + rnd(D, scale=0.2)
            w[p + "mlp.gate_proj.weight"] = rnd(F, D)
            w[p + "mlp.up_proj.weight"] = rnd(F, D)
            w[p + "mlp.down_proj.weight"] = rnd(D, F)
        w["model.norm.weight"] = 1 + rnd(D, scale=0.2)
        if not cfg.get("tie_word_embeddings"):
            w["lm_head.weight"] = rnd(V, D)
        write_safetensors(os.path.join(d, "model.safetensors"), w)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        # The converted stories260K tokenizer (512 pieces) serves every random model.
        for t in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(self.converted, t), d)
        return d, w

    def check_random_model(self, name, cfg, qkv_bias, num_tokens=40):
        d, w = self.make_random_model(name, cfg, qkv_bias)
        ids = [1] + torch.randint(3, cfg["vocab_size"], (num_tokens - 1,)).tolist()
        with torch.no_grad():
            ref = forward(cfg, w, ids, qkv_bias)
        ours = self.run_funnel_logits(d, ids)
        diff = (ours - ref).abs().max().item()
        scale = ref.abs().max().item()
        print(f"{name}: funnel vs torch reference max |diff| {diff:.3g} (logits up to {scale:.3g})")
        self.assertLess(diff, 1e-3)
        return ref, ids, w

    def test_llama31_style_rope_scaling_and_tied_embeddings(self):
        # Short wavelengths (high frequency) are kept, long ones divided by the factor, the middle
        # interpolated; original_max_position_embeddings is small here so all three regimes occur
        # with head_dim 16 (wavelengths from 2*pi to ~2*pi*500000^(7/8)).
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
               "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
               "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
               "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 64},
               "tie_word_embeddings": True, "hidden_act": "silu", "bos_token_id": 1,
               "eos_token_id": [2, 3]}
        f = inv_freq(cfg)
        base = inv_freq({**cfg, "rope_scaling": None})
        self.assertEqual(f[0].item(), base[0].item())                 # wavelength 6.3: kept
        self.assertTrue(base[1] / 8 < f[1] < base[1])                # 32: interpolated
        self.assertTrue(torch.allclose(f[2:], base[2:] / 8))          # >= 167: divided by 8
        ref, ids, w = self.check_random_model("llama31", cfg, qkv_bias=False)
        # Without the scaling the logits differ clearly: the match above needs the llama3
        # frequencies, not just the plain ones.
        with torch.no_grad():
            plain = forward({**cfg, "rope_scaling": None}, w, ids, False)
        self.assertGreater((plain - ref).abs().max().item(), 1e-2)

    def test_qwen2_with_qkv_biases(self):
        cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
               "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 512,
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
               "rope_scaling": None, "tie_word_embeddings": False, "hidden_act": "silu",
               "use_sliding_window": False, "sliding_window": 2048, "bos_token_id": 1,
               "eos_token_id": 2}
        ref, ids, w = self.check_random_model("qwen2", cfg, qkv_bias=True)
        with torch.no_grad():  # control: the biases matter
            self.assertGreater((forward(cfg, w, ids, False) - ref).abs().max().item(), 1e-2)

    def test_mistral(self):
        cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
               "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
               "num_attention_heads": 4, "num_key_value_heads": 1, "vocab_size": 512,
               "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
               "sliding_window": None, "tie_word_embeddings": False, "hidden_act": "silu",
               "bos_token_id": 1, "eos_token_id": 2}
        self.check_random_model("mistral", cfg, qkv_bias=False)


def load_golden_next_tokens():
    with open(os.path.join(STORIES, "stories260K.ref_greedy48.json")) as f:
        meta = json.load(f)
    return meta["full_sequence_incl_last_prediction"][1:49]


if __name__ == "__main__":
    unittest.main()
