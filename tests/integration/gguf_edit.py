"""Writes a copy of a GGUF file with one extra string metadata key (for chat template tests).

GGUF v2/v3 layout: magic, version (u32), tensor count (u64), metadata count (u64), the metadata
key-values, the tensor infos, padding to the alignment, then the tensor data. Tensor offsets are
relative to the start of the data, so inserting a key only moves where the data starts.
"""

import struct

_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def u32(self):
        (v,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        return v

    def u64(self):
        (v,) = struct.unpack_from("<Q", self.data, self.pos)
        self.pos += 8
        return v

    def string(self):
        n = self.u64()
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8")

    def skip_value(self, vtype):
        if vtype == _STRING:
            self.string()
        elif vtype == _ARRAY:
            etype, count = self.u32(), self.u64()
            for _ in range(count):
                self.skip_value(etype)
        else:
            self.pos += _SCALAR_SIZES[vtype]


def _string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def with_string_key(src, dst, key, value):
    with open(src, "rb") as f:
        data = f.read()
    r = _Reader(data)
    assert data[:4] == b"GGUF", "not a GGUF file"
    r.pos = 4
    version, n_tensors, n_kv = r.u32(), r.u64(), r.u64()
    assert version in (2, 3), version
    kv_start = r.pos
    alignment = 32
    for _ in range(n_kv):
        k = r.string()
        vtype = r.u32()
        if k == "general.alignment":
            alignment = struct.unpack_from("<I", data, r.pos)[0]
        assert k != key, "the file already has " + key
        r.skip_value(vtype)
    kv_end = r.pos
    for _ in range(n_tensors):
        r.string()
        n_dims = r.u32()
        r.pos += 8 * n_dims + 4 + 8  # dims, type, offset
    infos_end = r.pos
    data_start = (infos_end + alignment - 1) // alignment * alignment

    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv + 1))
    out += data[kv_start:kv_end] + _string(key) + struct.pack("<I", _STRING) + _string(value)
    out += data[kv_end:infos_end]
    out += b"\0" * ((-len(out)) % alignment)
    out += data[data_start:]
    with open(dst, "wb") as f:
        f.write(out)
