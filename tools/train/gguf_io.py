"""Minimal GGUF v3 reader and writer (metadata + F32/F16 tensors) for the training tools.

Layout: magic "GGUF", version u32, tensor count u64, metadata count u64, key/values, tensor infos
(name, n_dims u32, dims u64[n] innermost first, type u32, offset u64), padding to the alignment,
tensor data (each tensor aligned). Only what the fixture export needs: scalar/string/array values,
F32 (type 0) and F16 (type 1) tensors.
"""

import struct

import numpy as np

# GGUF value types.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?",
        U64: "Q", I64: "q", F64: "d"}
GGML_F32, GGML_F16 = 0, 1


class _Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0

    def take(self, fmt):
        (v,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self):
        n = self.take("Q")
        s = self.data[self.pos:self.pos + n].decode("utf-8", errors="surrogateescape")
        self.pos += n
        return s

    def value(self, vtype):
        if vtype == STRING:
            return self.string()
        if vtype == ARRAY:
            etype, count = self.take("I"), self.take("Q")
            if etype in _FMT:
                fmt = "<%d%s" % (count, _FMT[etype])
                vals = list(struct.unpack_from(fmt, self.data, self.pos))
                self.pos += struct.calcsize(fmt)
                return (etype, vals)
            return (etype, [self.value(etype) for _ in range(count)])
        return self.take(_FMT[vtype])


def read_gguf(path):
    """Returns (metadata {key: (vtype, value)}, tensors {name: np.ndarray in PyTorch row-major shape})."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        raise ValueError(path + ": not a GGUF file")
    r = _Reader(data)
    r.pos = 4
    version, n_tensors, n_kv = r.take("I"), r.take("Q"), r.take("Q")
    if version not in (2, 3):
        raise ValueError("unsupported GGUF version %d" % version)
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        vtype = r.take("I")
        meta[k] = (vtype, r.value(vtype))
    alignment = meta.get("general.alignment", (U32, 32))[1]
    infos = []
    for _ in range(n_tensors):
        name = r.string()
        nd = r.take("I")
        dims = [r.take("Q") for _ in range(nd)]
        ttype, off = r.take("I"), r.take("Q")
        infos.append((name, dims, ttype, off))
    start = (r.pos + alignment - 1) // alignment * alignment
    tensors = {}
    for name, dims, ttype, off in infos:
        dt = {GGML_F32: np.float32, GGML_F16: np.float16}.get(ttype)
        if dt is None:
            raise ValueError("tensor %s: unsupported type %d" % (name, ttype))
        n = int(np.prod(dims))
        arr = np.frombuffer(data, dtype=dt, count=n, offset=start + off)
        tensors[name] = arr.reshape(list(reversed(dims))).astype(np.float32)
    return meta, tensors


def _pack_value(vtype, v):
    if vtype == STRING:
        b = v.encode("utf-8", errors="surrogateescape")
        return struct.pack("<Q", len(b)) + b
    if vtype == ARRAY:
        etype, vals = v
        out = struct.pack("<IQ", etype, len(vals))
        if etype in _FMT:
            return out + struct.pack("<%d%s" % (len(vals), _FMT[etype]), *vals)
        return out + b"".join(_pack_value(etype, x) for x in vals)
    return struct.pack("<" + _FMT[vtype], v)


def write_gguf(path, meta, tensors, f16_matrices=False, alignment=32):
    """Writes meta {key: (vtype, value)} and tensors {name: np.ndarray row-major}.

    With f16_matrices, 2-D tensors are stored as F16 and 1-D ones (norms) as F32.
    """
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)))
    for k, (vtype, v) in meta.items():
        out += _pack_value(STRING, k) + struct.pack("<I", vtype) + _pack_value(vtype, v)
    blobs, off = [], 0
    for name, arr in tensors.items():
        is16 = f16_matrices and arr.ndim == 2
        a = np.ascontiguousarray(arr, dtype=np.float16 if is16 else np.float32)
        dims = list(reversed(a.shape))
        out += _pack_value(STRING, name) + struct.pack("<I", len(dims))
        out += struct.pack("<%dQ" % len(dims), *dims)
        out += struct.pack("<IQ", GGML_F16 if is16 else GGML_F32, off)
        b = a.tobytes()
        pad = (-len(b)) % alignment
        blobs.append(b + b"\0" * pad)
        off += len(b) + pad
    out += b"\0" * ((-len(out)) % alignment)
    with open(path, "wb") as f:
        f.write(out)
        for b in blobs:
            f.write(b)
