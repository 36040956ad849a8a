#include "runtime/model/safetensors_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

struct DtypeInfo {
  SafetensorsDtype dtype;
  const char* name;
  int64_t size;
};

constexpr DtypeInfo kDtypes[] = {
    {SafetensorsDtype::kBool, "BOOL", 1},      {SafetensorsDtype::kU8, "U8", 1},
    {SafetensorsDtype::kI8, "I8", 1},          {SafetensorsDtype::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDtype::kF8E4M3, "F8_E4M3", 1}, {SafetensorsDtype::kI16, "I16", 2},
    {SafetensorsDtype::kU16, "U16", 2},        {SafetensorsDtype::kF16, "F16", 2},
    {SafetensorsDtype::kBF16, "BF16", 2},      {SafetensorsDtype::kI32, "I32", 4},
    {SafetensorsDtype::kU32, "U32", 4},        {SafetensorsDtype::kF32, "F32", 4},
    {SafetensorsDtype::kF64, "F64", 8},        {SafetensorsDtype::kI64, "I64", 8},
    {SafetensorsDtype::kU64, "U64", 8},
};

const DtypeInfo& Info(SafetensorsDtype dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (d.dtype == dtype) return d;
  }
  return kDtypes[0];  // unreachable: every enum value is listed
}

absl::Status Bad(const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: ", what));
}

// A JSON value that must be a non-negative integer below 2^63.
absl::StatusOr<uint64_t> NonNegative(const Json& v, const std::string& what) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return u;
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  return Bad(absl::StrCat(what, " must be a non-negative integer, got ", v.dump()));
}

absl::StatusOr<SafetensorsTensor> ParseEntry(const std::string& name, const Json& v) {
  const std::string where = absl::StrCat("tensor '", name, "'");
  if (!v.is_object()) return Bad(absl::StrCat(where, ": entry is not an object"));
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Bad(absl::StrCat(where, ": unknown field '", key, "'"));
    }
  }
  if (!v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets")) {
    return Bad(absl::StrCat(where, ": needs dtype, shape and data_offsets"));
  }
  SafetensorsTensor t;
  t.name = name;
  const Json& dtype = v["dtype"];
  if (!dtype.is_string()) return Bad(absl::StrCat(where, ": dtype is not a string"));
  auto parsed = ParseSafetensorsDtype(dtype.get<std::string>());
  if (!parsed.ok()) return Bad(absl::StrCat(where, ": ", parsed.status().message()));
  t.dtype = *parsed;

  const Json& shape = v["shape"];
  if (!shape.is_array()) return Bad(absl::StrCat(where, ": shape is not an array"));
  constexpr uint64_t kMaxElements = uint64_t{1} << 56;  // times 8 bytes still fits in int64
  uint64_t elems = 1;
  bool zero = false, overflow = false;
  for (const Json& d : shape) {
    ASSIGN_OR_RETURN(uint64_t n, NonNegative(d, absl::StrCat(where, ": shape entry")));
    t.shape.push_back(static_cast<int64_t>(n));
    if (n == 0) {
      zero = true;
    } else if (elems > kMaxElements / n) {
      overflow = true;
    } else {
      elems *= n;
    }
  }
  if (zero) {
    elems = 0;
  } else if (overflow) {
    return Bad(absl::StrFormat("%s: shape [%s] has too many elements", where,
                               absl::StrJoin(t.shape, ", ")));
  }
  t.num_elements = static_cast<int64_t>(elems);

  const Json& offsets = v["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2) {
    return Bad(absl::StrCat(where, ": data_offsets must be [begin, end]"));
  }
  ASSIGN_OR_RETURN(t.begin, NonNegative(offsets[0], absl::StrCat(where, ": data_offsets begin")));
  ASSIGN_OR_RETURN(t.end, NonNegative(offsets[1], absl::StrCat(where, ": data_offsets end")));
  if (t.end < t.begin) {
    return Bad(
        absl::StrFormat("%s: data_offsets end %d is before begin %d", where, t.end, t.begin));
  }
  const uint64_t expected = elems * static_cast<uint64_t>(SafetensorsDtypeSize(t.dtype));
  if (t.end - t.begin != expected) {
    return Bad(absl::StrFormat("%s: %s shape [%s] needs %d bytes but data_offsets [%d, %d] give %d",
                               where, SafetensorsDtypeName(t.dtype), absl::StrJoin(t.shape, ", "),
                               expected, t.begin, t.end, t.end - t.begin));
  }
  return t;
}

}  // namespace

const char* SafetensorsDtypeName(SafetensorsDtype dtype) { return Info(dtype).name; }

int64_t SafetensorsDtypeSize(SafetensorsDtype dtype) { return Info(dtype).size; }

absl::StatusOr<SafetensorsDtype> ParseSafetensorsDtype(std::string_view name) {
  for (const DtypeInfo& d : kDtypes) {
    if (name == d.name) return d.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", std::string(name), "'"));
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot open safetensors file '", path, "': ", std::strerror(errno)));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is not a regular file"));
  }
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* map = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("mmap of '", path, "' failed: ", std::strerror(err)));
    }
    file->mapping_ = map;
    file->base_ = static_cast<const uint8_t*>(map);
  }
  ::close(fd);
  if (absl::Status parsed = file->Parse(); !parsed.ok()) {
    return absl::Status(parsed.code(), absl::StrCat(path, ": ", parsed.message()));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::FromBytes(
    std::span<const uint8_t> bytes, const std::string& name) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  file->path_ = name;
  file->owned_.assign(bytes.begin(), bytes.end());
  file->base_ = file->owned_.data();
  file->size_ = file->owned_.size();
  if (absl::Status parsed = file->Parse(); !parsed.ok()) {
    return absl::Status(parsed.code(), absl::StrCat(name, ": ", parsed.message()));
  }
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

const SafetensorsTensor* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(absl::string_view(name.data(), name.size()));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

absl::Status SafetensorsFile::Parse() {
  if (size_ < 8) {
    return Bad(
        absl::StrFormat("file of %d bytes is too small for the 8-byte header length", size_));
  }
  uint64_t header_len;
  std::memcpy(&header_len, base_, 8);
  if (header_len > size_ - 8) {
    return Bad(absl::StrFormat("header length %d reaches beyond the end of the file (%d bytes)",
                               header_len, size_));
  }
  if (header_len > kMaxHeaderBytes) {
    return Bad(absl::StrFormat("header length %d exceeds the limit of %d bytes", header_len,
                               kMaxHeaderBytes));
  }
  data_offset_ = 8 + header_len;
  std::string_view json(reinterpret_cast<const char*>(base_ + 8), header_len);
  if (json.empty() || json.front() != '{') {
    return Bad("header does not start with '{' (not a safetensors file?)");
  }
  RETURN_IF_ERROR(ParseHeader(json, size_ - data_offset_));
  for (size_t i = 0; i < tensors_.size(); ++i) {
    tensors_[i].data = base_ + data_offset_ + tensors_[i].begin;
    index_.emplace(tensors_[i].name, i);
  }
  return absl::OkStatus();
}

absl::Status SafetensorsFile::ParseHeader(std::string_view json, uint64_t data_size) {
  Json header;
  try {
    header = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return Bad(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return Bad("header is not a JSON object");
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) return Bad("__metadata__ is not an object");
      for (const auto& [key, v] : value.items()) {
        if (!v.is_string())
          return Bad(absl::StrCat("__metadata__ value of '", key, "' is not a string"));
        metadata_[key] = v.get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsTensor t, ParseEntry(name, value));
    if (t.end > data_size) {
      return Bad(absl::StrFormat(
          "tensor '%s': data_offsets [%d, %d] reach beyond the data section (%d bytes)", name,
          t.begin, t.end, data_size));
    }
    tensors_.push_back(std::move(t));
  }
  std::sort(tensors_.begin(), tensors_.end(),
            [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  return CheckCoverage(data_size);
}

// The byte ranges, in order, must tile the data section exactly (as the reference requires).
absl::Status SafetensorsFile::CheckCoverage(uint64_t data_size) const {
  uint64_t covered = 0;
  const SafetensorsTensor* previous = nullptr;
  for (const SafetensorsTensor& t : tensors_) {
    if (t.begin < covered) {
      return Bad(absl::StrFormat("tensor '%s' [%d, %d) overlaps tensor '%s' [%d, %d)", t.name,
                                 t.begin, t.end, previous->name, previous->begin, previous->end));
    }
    if (t.begin > covered) {
      return Bad(absl::StrFormat(
          "tensor '%s' starts at byte %d but the previous tensor ends at %d (gaps are not allowed)",
          t.name, t.begin, covered));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return Bad(absl::StrFormat("%d bytes of the data section after byte %d belong to no tensor",
                               data_size - covered, covered));
  }
  return absl::OkStatus();
}

}  // namespace funnel
