#include "runtime/model/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace funnel {
namespace {

class ByteSink {
 public:
  template <typename T>
  void Put(T value) {
    const size_t at = out_.size();
    out_.resize(at + sizeof(T));
    std::memcpy(out_.data() + at, &value, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    PutBytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
  }
  void PutBytes(std::span<const uint8_t> b) {
    if (b.empty()) return;
    const size_t at = out_.size();
    out_.resize(at + b.size());
    std::memcpy(out_.data() + at, b.data(), b.size());
  }
  void PadTo(uint64_t alignment) {
    while (out_.size() % alignment != 0) out_.push_back(0);
  }
  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

void PutValue(ByteSink& sink, const GgufValue& v);

void PutScalar(ByteSink& sink, const GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kUint8: sink.Put<uint8_t>(std::get<uint64_t>(v.data)); break;
    case GgufValueType::kInt8: sink.Put<int8_t>(std::get<int64_t>(v.data)); break;
    case GgufValueType::kUint16: sink.Put<uint16_t>(std::get<uint64_t>(v.data)); break;
    case GgufValueType::kInt16: sink.Put<int16_t>(std::get<int64_t>(v.data)); break;
    case GgufValueType::kUint32: sink.Put<uint32_t>(std::get<uint64_t>(v.data)); break;
    case GgufValueType::kInt32: sink.Put<int32_t>(std::get<int64_t>(v.data)); break;
    case GgufValueType::kUint64: sink.Put<uint64_t>(std::get<uint64_t>(v.data)); break;
    case GgufValueType::kInt64: sink.Put<int64_t>(std::get<int64_t>(v.data)); break;
    case GgufValueType::kFloat32: sink.Put<float>(std::get<double>(v.data)); break;
    case GgufValueType::kFloat64: sink.Put<double>(std::get<double>(v.data)); break;
    case GgufValueType::kBool: sink.Put<uint8_t>(std::get<bool>(v.data) ? 1 : 0); break;
    case GgufValueType::kString: sink.PutString(std::get<std::string>(v.data)); break;
    case GgufValueType::kArray: {
      const auto& a = std::get<GgufArray>(v.data);
      sink.Put<uint32_t>(static_cast<uint32_t>(a.elem_type));
      sink.Put<uint64_t>(a.items.size());
      for (const GgufValue& item : a.items) PutScalar(sink, item);
      break;
    }
  }
}

void PutValue(ByteSink& sink, const GgufValue& v) {
  sink.Put<uint32_t>(static_cast<uint32_t>(v.type));
  PutScalar(sink, v);
}

GgufValue MakeArray(GgufValueType elem_type, std::vector<GgufValue> items) {
  return GgufValue{GgufValueType::kArray, GgufArray{elem_type, std::move(items)}};
}

}  // namespace

void GgufWriter::AddString(const std::string& key, const std::string& value) {
  metadata_.emplace_back(key, GgufValue{GgufValueType::kString, value});
}
void GgufWriter::AddUint32(const std::string& key, uint32_t value) {
  metadata_.emplace_back(key, GgufValue{GgufValueType::kUint32, uint64_t{value}});
}
void GgufWriter::AddInt32(const std::string& key, int32_t value) {
  metadata_.emplace_back(key, GgufValue{GgufValueType::kInt32, int64_t{value}});
}
void GgufWriter::AddFloat32(const std::string& key, float value) {
  metadata_.emplace_back(key, GgufValue{GgufValueType::kFloat32, double{value}});
}
void GgufWriter::AddBool(const std::string& key, bool value) {
  metadata_.emplace_back(key, GgufValue{GgufValueType::kBool, value});
}
void GgufWriter::AddStringArray(const std::string& key, const std::vector<std::string>& values) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (const auto& s : values) items.push_back(GgufValue{GgufValueType::kString, s});
  metadata_.emplace_back(key, MakeArray(GgufValueType::kString, std::move(items)));
}
void GgufWriter::AddFloat32Array(const std::string& key, const std::vector<float>& values) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (float f : values) items.push_back(GgufValue{GgufValueType::kFloat32, double{f}});
  metadata_.emplace_back(key, MakeArray(GgufValueType::kFloat32, std::move(items)));
}
void GgufWriter::AddInt32Array(const std::string& key, const std::vector<int32_t>& values) {
  std::vector<GgufValue> items;
  items.reserve(values.size());
  for (int32_t i : values) items.push_back(GgufValue{GgufValueType::kInt32, int64_t{i}});
  metadata_.emplace_back(key, MakeArray(GgufValueType::kInt32, std::move(items)));
}
void GgufWriter::AddValue(const std::string& key, const GgufValue& value) {
  metadata_.emplace_back(key, value);
}

void GgufWriter::AddTensor(const std::string& name, std::vector<int64_t> dims, GgmlType type,
                           std::vector<uint8_t> bytes) {
  tensors_.push_back(Tensor{name, std::move(dims), type, std::move(bytes)});
}

std::vector<uint8_t> GgufWriter::SerializeHeader() const {
  ByteSink sink;
  sink.Put<uint32_t>(0x46554747);
  sink.Put<uint32_t>(3);
  sink.Put<uint64_t>(tensors_.size());
  sink.Put<uint64_t>(metadata_.size() + (alignment_ != 32 ? 1 : 0));
  if (alignment_ != 32) {
    sink.PutString("general.alignment");
    PutValue(sink, GgufValue{GgufValueType::kUint32, uint64_t{alignment_}});
  }
  for (const auto& [key, value] : metadata_) {
    sink.PutString(key);
    PutValue(sink, value);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    sink.PutString(t.name);
    sink.Put<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) sink.Put<uint64_t>(static_cast<uint64_t>(d));
    sink.Put<uint32_t>(static_cast<uint32_t>(t.type));
    sink.Put<uint64_t>(offset);
    offset += (t.bytes.size() + alignment_ - 1) / alignment_ * alignment_;
  }
  sink.PadTo(alignment_);
  return sink.Take();
}

std::vector<uint8_t> GgufWriter::Serialize() const {
  ByteSink sink;
  sink.PutBytes(SerializeHeader());
  for (const Tensor& t : tensors_) {
    sink.PutBytes(t.bytes);
    sink.PadTo(alignment_);
  }
  return sink.Take();
}

absl::Status GgufWriter::WriteFile(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tmp, "'"));
    auto put = [&out](std::span<const uint8_t> b) {
      out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    };
    put(SerializeHeader());
    const std::vector<uint8_t> zeros(alignment_, 0);
    for (const Tensor& t : tensors_) {
      put(t.bytes);
      size_t pad = (alignment_ - t.bytes.size() % alignment_) % alignment_;
      put(std::span<const uint8_t>(zeros.data(), pad));
    }
    if (!out) return absl::DataLossError(absl::StrCat("write to '", tmp, "' failed"));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename to '", path, "' failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace funnel
