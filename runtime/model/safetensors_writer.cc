#include "runtime/model/safetensors_writer.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

absl::StatusOr<uint64_t> EntryBytes(const SafetensorsWriteEntry& e) {
  uint64_t n = static_cast<uint64_t>(SafetensorsDtypeSize(e.dtype));
  for (int64_t d : e.shape) {
    if (d < 0 || (d > 0 && n > (uint64_t{1} << 62) / static_cast<uint64_t>(d))) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors writer: tensor '", e.name, "' has a bad shape"));
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

// Writes through `path`.tmp, then renames; the temporary is removed on failure.
template <typename WriteFn>
absl::Status WriteAtomically(const std::string& path, WriteFn write) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", tmp, "'"));
    absl::Status st = write(out);
    out.flush();
    if (st.ok() && !out) st = absl::DataLossError(absl::StrCat("write to '", tmp, "' failed"));
    if (!st.ok()) {
      out.close();
      std::remove(tmp.c_str());
      return st;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("cannot rename '", tmp, "' to '", path, "': ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace

SafetensorsWriteEntry SafetensorsBytesEntry(std::string name, SafetensorsDtype dtype,
                                            std::vector<int64_t> shape,
                                            std::span<const uint8_t> data) {
  SafetensorsWriteEntry e{std::move(name), dtype, std::move(shape), nullptr};
  e.write = [data](std::ostream& out) {
    out.write(reinterpret_cast<const char*>(data.data()),
              static_cast<std::streamsize>(data.size()));
    return absl::OkStatus();
  };
  return e;
}

absl::Status WriteSafetensors(std::ostream& out, const std::vector<SafetensorsWriteEntry>& entries,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  absl::flat_hash_set<std::string> names;
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const SafetensorsWriteEntry& e : entries) {
    if (e.name.empty() || e.name == "__metadata__" || !names.insert(e.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("safetensors writer: empty, reserved or duplicate name '", e.name, "'"));
    }
    ASSIGN_OR_RETURN(uint64_t n, EntryBytes(e));
    header[e.name] = {{"dtype", SafetensorsDtypeName(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + n}}};
    sizes.push_back(n);
    offset += n;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors writer: ", e.what()));
  }
  json.append((8 - json.size() % 8) % 8, ' ');
  const uint64_t header_len = json.size();
  out.write(reinterpret_cast<const char*>(&header_len), 8);
  out.write(json.data(), static_cast<std::streamsize>(json.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    const std::streamoff before = out.tellp();
    RETURN_IF_ERROR(entries[i].write(out));
    if (!out) return absl::DataLossError("safetensors writer: stream write failed");
    const auto written = static_cast<uint64_t>(out.tellp() - before);
    if (written != sizes[i]) {
      return absl::InternalError(
          absl::StrFormat("safetensors writer: tensor '%s' wrote %d bytes, expected %d",
                          entries[i].name, written, sizes[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteSafetensorsFile(const std::string& path,
                                  const std::vector<SafetensorsWriteEntry>& entries,
                                  const std::map<std::string, std::string>& metadata) {
  return WriteAtomically(
      path, [&](std::ostream& out) { return WriteSafetensors(out, entries, metadata); });
}

absl::Status WriteTextFile(const std::string& path, const std::string& text) {
  return WriteAtomically(path, [&](std::ostream& out) {
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    return absl::OkStatus();
  });
}

}  // namespace funnel
