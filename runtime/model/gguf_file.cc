#include "runtime/model/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxTensors = 1 << 20;
constexpr uint64_t kMaxKeyValues = 1 << 20;
constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayNesting = 2;
// All metadata array elements of one file together (real files: ~1-2M for a 256k vocabulary).
// Each element costs sizeof(GgufValue) (48 bytes) in memory, so without a budget a corrupt count
// in a multi-GB file could make the parser allocate ~48x the file size (std::bad_alloc).
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 24;

// Bounds-checked little-endian cursor over the file bytes. Every read names what it reads so
// errors point at the field ("truncated file reading tensor 3 name at offset 1234").
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t offset() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    if (remaining() < sizeof(T)) return Truncated(what);
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  absl::StatusOr<std::string> ReadString(absl::string_view what) {
    ASSIGN_OR_RETURN(uint64_t len, Read<uint64_t>(what));
    if (len > remaining()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: %s has length %d but only %d bytes remain (offset %d)", what, len, remaining(),
          pos_));
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
    pos_ += len;
    return s;
  }

  absl::Status Skip(uint64_t n, absl::string_view what) {
    if (n > remaining()) return Truncated(what);
    pos_ += n;
    return absl::OkStatus();
  }

 private:
  absl::Status Truncated(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: truncated file reading %s at offset %d", what, pos_));
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Smallest encoded size of one value of `type`; used to reject absurd array counts up front.
absl::StatusOr<uint64_t> MinEncodedSize(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
    case GgufValueType::kString:  // length prefix
      return 8;
    case GgufValueType::kArray:  // type + count
      return 12;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("GGUF: unknown metadata value type %d", static_cast<uint32_t>(type)));
}

absl::StatusOr<GgufValue> ReadValue(Cursor& cur, GgufValueType type, int depth,
                                    absl::string_view what, uint64_t& elements_left);

absl::StatusOr<GgufValue> ReadArray(Cursor& cur, int depth, absl::string_view what,
                                    uint64_t& elements_left) {
  if (depth >= kMaxArrayNesting) {
    return absl::InvalidArgumentError(absl::StrCat("GGUF: arrays nested too deeply in ", what));
  }
  ASSIGN_OR_RETURN(uint32_t raw_elem, cur.Read<uint32_t>(what));
  auto elem_type = static_cast<GgufValueType>(raw_elem);
  ASSIGN_OR_RETURN(uint64_t min_size, MinEncodedSize(elem_type));
  ASSIGN_OR_RETURN(uint64_t count, cur.Read<uint64_t>(what));
  if (count > cur.remaining() / min_size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s declares %d array elements, more than the %d remaining bytes can hold", what,
        count, cur.remaining()));
  }
  if (count > elements_left) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "GGUF: %s declares %d array elements, over the limit of %d array elements per file", what,
        count, kMaxArrayElements));
  }
  elements_left -= count;
  GgufArray array;
  array.elem_type = elem_type;
  array.items.reserve(count);
  for (uint64_t i = 0; i < count; ++i) {
    ASSIGN_OR_RETURN(GgufValue item, ReadValue(cur, elem_type, depth + 1, what, elements_left));
    array.items.push_back(std::move(item));
  }
  return GgufValue{GgufValueType::kArray, std::move(array)};
}

absl::StatusOr<GgufValue> ReadValue(Cursor& cur, GgufValueType type, int depth,
                                    absl::string_view what, uint64_t& elements_left) {
  GgufValue v;
  v.type = type;
  switch (type) {
    case GgufValueType::kUint8: {
      ASSIGN_OR_RETURN(uint8_t x, cur.Read<uint8_t>(what));
      v.data = uint64_t{x};
      return v;
    }
    case GgufValueType::kInt8: {
      ASSIGN_OR_RETURN(int8_t x, cur.Read<int8_t>(what));
      v.data = int64_t{x};
      return v;
    }
    case GgufValueType::kUint16: {
      ASSIGN_OR_RETURN(uint16_t x, cur.Read<uint16_t>(what));
      v.data = uint64_t{x};
      return v;
    }
    case GgufValueType::kInt16: {
      ASSIGN_OR_RETURN(int16_t x, cur.Read<int16_t>(what));
      v.data = int64_t{x};
      return v;
    }
    case GgufValueType::kUint32: {
      ASSIGN_OR_RETURN(uint32_t x, cur.Read<uint32_t>(what));
      v.data = uint64_t{x};
      return v;
    }
    case GgufValueType::kInt32: {
      ASSIGN_OR_RETURN(int32_t x, cur.Read<int32_t>(what));
      v.data = int64_t{x};
      return v;
    }
    case GgufValueType::kUint64: {
      ASSIGN_OR_RETURN(uint64_t x, cur.Read<uint64_t>(what));
      v.data = x;
      return v;
    }
    case GgufValueType::kInt64: {
      ASSIGN_OR_RETURN(int64_t x, cur.Read<int64_t>(what));
      v.data = x;
      return v;
    }
    case GgufValueType::kFloat32: {
      ASSIGN_OR_RETURN(float x, cur.Read<float>(what));
      v.data = double{x};
      return v;
    }
    case GgufValueType::kFloat64: {
      ASSIGN_OR_RETURN(double x, cur.Read<double>(what));
      v.data = x;
      return v;
    }
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(uint8_t x, cur.Read<uint8_t>(what));
      if (x > 1) {
        return absl::InvalidArgumentError(absl::StrFormat("GGUF: %s: bool value %d", what, x));
      }
      v.data = x != 0;
      return v;
    }
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(std::string s, cur.ReadString(what));
      v.data = std::move(s);
      return v;
    }
    case GgufValueType::kArray:
      return ReadArray(cur, depth, what, elements_left);
  }
  return absl::InvalidArgumentError(absl::StrFormat("GGUF: %s has unknown value type %d", what,
                                                    static_cast<uint32_t>(type)));
}

absl::Status TypeMismatch(absl::string_view key, absl::string_view wanted) {
  return absl::InvalidArgumentError(
      absl::StrCat("GGUF: metadata key '", key, "' is not ", wanted));
}

// Integer view of a scalar value, if it is an integer that fits int64.
std::optional<int64_t> AsInt(const GgufValue& v) {
  if (const auto* u = std::get_if<uint64_t>(&v.data)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&v.data)) return *i;
  return std::nullopt;
}

std::optional<double> AsFloat(const GgufValue& v) {
  if (const auto* d = std::get_if<double>(&v.data)) return *d;
  if (auto i = AsInt(v)) return static_cast<double>(*i);
  return std::nullopt;
}

}  // namespace

std::string GgmlTypeName(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kBF16: return "BF16";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_1: return "Q8_1";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kQ8_K: return "Q8_K";
    case GgmlType::kI8: return "I8";
    case GgmlType::kI16: return "I16";
    case GgmlType::kI32: return "I32";
    case GgmlType::kI64: return "I64";
    case GgmlType::kF64: return "F64";
  }
  return absl::StrCat("type(", static_cast<uint32_t>(type), ")");
}

GgmlTypeLayout GetGgmlTypeLayout(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return {1, 4};
    case GgmlType::kF16: return {1, 2};
    case GgmlType::kBF16: return {1, 2};
    case GgmlType::kQ8_0: return {kQ8_0BlockElems, kQ8_0BlockBytes};
    case GgmlType::kI8: return {1, 1};
    case GgmlType::kI16: return {1, 2};
    case GgmlType::kI32: return {1, 4};
    case GgmlType::kI64: return {1, 8};
    case GgmlType::kF64: return {1, 8};
    default: return {0, 0};
  }
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat("cannot open model file '", path, "': ",
                                            std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      ::close(fd);
      return absl::InternalError(absl::StrCat("mmap of '", path, "' failed: ", std::strerror(errno)));
    }
    file->mapping_ = map;
    file->base_ = static_cast<const uint8_t*>(map);
  }
  ::close(fd);
  absl::Status st2 = file->Parse();
  if (!st2.ok()) {
    return absl::Status(st2.code(), absl::StrCat(path, ": ", st2.message()));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::FromBytes(std::span<const uint8_t> bytes) {
  auto file = std::unique_ptr<GgufFile>(new GgufFile());
  file->path_ = "<memory>";
  file->owned_.assign(bytes.begin(), bytes.end());
  file->base_ = file->owned_.data();
  file->size_ = file->owned_.size();
  RETURN_IF_ERROR(file->Parse());
  return file;
}

GgufFile::~GgufFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

absl::Status GgufFile::Parse() {
  Cursor cur(base_, size_);
  ASSIGN_OR_RETURN(uint32_t magic, cur.Read<uint32_t>("magic"));
  if (magic != kGgufMagic) {
    return absl::InvalidArgumentError(
        absl::StrFormat("not a GGUF file (magic 0x%08x, expected 0x%08x \"GGUF\")", magic,
                        kGgufMagic));
  }
  ASSIGN_OR_RETURN(version_, cur.Read<uint32_t>("version"));
  if (version_ != 2 && version_ != 3) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: unsupported version %d (supported: 2, 3)", version_));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, cur.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, cur.Read<uint64_t>("metadata count"));
  if (n_tensors > kMaxTensors || n_tensors > cur.remaining() / 24) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: absurd tensor count %d for a %d-byte file", n_tensors, size_));
  }
  if (n_kv > kMaxKeyValues || n_kv > cur.remaining() / 12) {
    return absl::InvalidArgumentError(
        absl::StrFormat("GGUF: absurd metadata count %d for a %d-byte file", n_kv, size_));
  }

  metadata_.reserve(n_kv);
  uint64_t array_elements_left = kMaxArrayElements;
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string what = absl::StrCat("metadata key ", i);
    ASSIGN_OR_RETURN(std::string key, cur.ReadString(what));
    what = absl::StrCat("metadata '", key, "'");
    ASSIGN_OR_RETURN(uint32_t raw_type, cur.Read<uint32_t>(what));
    ASSIGN_OR_RETURN(GgufValue value, ReadValue(cur, static_cast<GgufValueType>(raw_type), 0,
                                                what, array_elements_left));
    if (!metadata_index_.emplace(key, metadata_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: duplicate metadata key '", key, "'"));
    }
    metadata_.emplace_back(std::move(key), std::move(value));
  }

  if (const GgufValue* a = Find("general.alignment")) {
    std::optional<int64_t> align = AsInt(*a);
    // At least 8 (the spec asks for a multiple of 8): tensor data must be naturally aligned for
    // its element type, or the loaders' typed reads (e.g. BF16 norms) are misaligned.
    if (!align || *align < 8 || (*align & (*align - 1)) != 0 || *align > (1 << 20)) {
      return absl::InvalidArgumentError(
          "GGUF: general.alignment must be a power of two from 8 to 1048576");
    }
    alignment_ = static_cast<uint64_t>(*align);
  }

  tensors_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    std::string what = absl::StrCat("tensor ", i);
    GgufTensorInfo t;
    ASSIGN_OR_RETURN(t.name, cur.ReadString(what + " name"));
    what = absl::StrCat("tensor '", t.name, "'");
    ASSIGN_OR_RETURN(uint32_t n_dims, cur.Read<uint32_t>(what + " dims"));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return absl::InvalidArgumentError(
          absl::StrFormat("GGUF: %s has %d dimensions (1..%d allowed)", what, n_dims, kMaxDims));
    }
    int64_t elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t dim, cur.Read<uint64_t>(what + " shape"));
      if (dim == 0 || dim > (uint64_t{1} << 40) ||
          static_cast<uint64_t>(elems) > (uint64_t{1} << 50) / dim) {
        return absl::InvalidArgumentError(
            absl::StrFormat("GGUF: %s has an invalid dimension %d", what, dim));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
      elems *= static_cast<int64_t>(dim);
    }
    t.num_elements = elems;
    ASSIGN_OR_RETURN(uint32_t raw_type, cur.Read<uint32_t>(what + " type"));
    t.type = static_cast<GgmlType>(raw_type);
    ASSIGN_OR_RETURN(t.offset, cur.Read<uint64_t>(what + " offset"));
    GgmlTypeLayout layout = GetGgmlTypeLayout(t.type);
    if (layout.block_elems > 0) {
      if (t.dims[0] % layout.block_elems != 0) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "GGUF: %s: row length %d is not a multiple of the %s block size %d", what, t.dims[0],
            GgmlTypeName(t.type), layout.block_elems));
      }
      t.num_bytes = elems / layout.block_elems * layout.block_bytes;
    }
    if (t.offset % alignment_ != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: %s offset %d is not aligned to %d", what, t.offset, alignment_));
    }
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) {
      return absl::InvalidArgumentError(absl::StrCat("GGUF: duplicate tensor name '", t.name, "'"));
    }
    tensors_.push_back(std::move(t));
  }

  uint64_t data_start = (cur.offset() + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_start > size_) {
    return absl::InvalidArgumentError("GGUF: truncated file: tensor data section is missing");
  }
  for (GgufTensorInfo& t : tensors_) {
    // Unknown/unsupported types keep data == nullptr; the weight loader names them.
    if (t.num_bytes == 0) continue;
    uint64_t end = data_start + t.offset;
    if (t.offset > size_ || end > size_ || static_cast<uint64_t>(t.num_bytes) > size_ - end) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "GGUF: tensor '%s' (%d bytes at data offset %d) lies outside the %d-byte file", t.name,
          t.num_bytes, t.offset, size_));
    }
    t.data = base_ + end;
  }
  return absl::OkStatus();
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = metadata_index_.find(absl::string_view(key.data(), key.size()));
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(absl::string_view(name.data(), name.size()));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  if (auto i = AsInt(*v)) return *i;
  return TypeMismatch(absl::string_view(key.data(), key.size()), "an integer");
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  if (auto f = AsFloat(*v)) return *f;
  return TypeMismatch(absl::string_view(key.data(), key.size()), "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  if (const auto* b = std::get_if<bool>(&v->data)) return *b;
  return TypeMismatch(absl::string_view(key.data(), key.size()), "a bool");
}

absl::StatusOr<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  if (const auto* s = std::get_if<std::string>(&v->data)) return *s;
  return TypeMismatch(absl::string_view(key.data(), key.size()), "a string");
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  const auto* a = std::get_if<GgufArray>(&v->data);
  if (a == nullptr || a->elem_type != GgufValueType::kString) {
    return TypeMismatch(absl::string_view(key.data(), key.size()), "an array of strings");
  }
  std::vector<std::string> out;
  out.reserve(a->items.size());
  for (const GgufValue& item : a->items) out.push_back(std::get<std::string>(item.data));
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  const auto* a = std::get_if<GgufArray>(&v->data);
  if (a == nullptr) return TypeMismatch(absl::string_view(key.data(), key.size()), "an array of numbers");
  std::vector<float> out;
  out.reserve(a->items.size());
  for (const GgufValue& item : a->items) {
    std::optional<double> f = AsFloat(item);
    if (!f) return TypeMismatch(absl::string_view(key.data(), key.size()), "an array of numbers");
    out.push_back(static_cast<float>(*f));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return absl::NotFoundError(absl::StrCat("GGUF: missing metadata '", absl::string_view(key.data(), key.size()), "'"));
  const auto* a = std::get_if<GgufArray>(&v->data);
  if (a == nullptr) return TypeMismatch(absl::string_view(key.data(), key.size()), "an array of integers");
  std::vector<int64_t> out;
  out.reserve(a->items.size());
  for (const GgufValue& item : a->items) {
    std::optional<int64_t> i = AsInt(item);
    if (!i) return TypeMismatch(absl::string_view(key.data(), key.size()), "an array of integers");
    out.push_back(*i);
  }
  return out;
}

}  // namespace funnel
