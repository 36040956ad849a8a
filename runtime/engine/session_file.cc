#include "runtime/engine/session_file.h"

#include <cstring>
#include <type_traits>

#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr char kMagic[8] = {'F', 'U', 'N', 'N', 'E', 'L', 'S', 'S'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxLayers = 4096;
constexpr uint32_t kMaxString = 4096;

uint64_t Fnv1a(std::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    static_assert(std::is_trivially_copyable_v<T>);
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void PutString(std::string_view s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  template <typename T>
  void PutArray(const std::vector<T>& v) {
    out_.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  template <typename T>
  absl::StatusOr<T> Get(const char* what) {
    if (in_.size() < sizeof(T)) return Truncated(what);
    T v;
    std::memcpy(&v, in_.data(), sizeof(T));
    in_.remove_prefix(sizeof(T));
    return v;
  }
  absl::StatusOr<std::string> GetString(const char* what) {
    ASSIGN_OR_RETURN(const uint32_t n, Get<uint32_t>(what));
    if (n > kMaxString) return absl::InvalidArgumentError(absl::StrFormat("%s is too long", what));
    if (in_.size() < n) return Truncated(what);
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  // `count` elements of T, checked against the bytes left before allocating.
  template <typename T>
  absl::StatusOr<std::vector<T>> GetArray(uint64_t count, const char* what) {
    if (count > in_.size() / sizeof(T)) return Truncated(what);
    std::vector<T> v(static_cast<size_t>(count));
    std::memcpy(v.data(), in_.data(), count * sizeof(T));
    in_.remove_prefix(count * sizeof(T));
    return v;
  }
  bool empty() const { return in_.empty(); }

 private:
  static absl::Status Truncated(const char* what) {
    return absl::InvalidArgumentError(absl::StrFormat("session file truncated in %s", what));
  }
  std::string_view in_;
};

void PutPolicy(Writer& w, const KvPolicy& p) {
  w.Put<uint32_t>(static_cast<uint32_t>(p.method));
  w.Put<int64_t>(p.budget);
  w.Put<double>(p.ratio);
  w.Put<int32_t>(p.window);
  w.Put<uint32_t>(static_cast<uint32_t>(p.pooling));
  w.Put<int32_t>(p.kernel);
  w.Put<double>(p.beta);
  w.Put<uint32_t>(static_cast<uint32_t>(p.rounding));
}

absl::StatusOr<KvPolicy> GetPolicy(Reader& r) {
  KvPolicy p;
  ASSIGN_OR_RETURN(const uint32_t method, r.Get<uint32_t>("policy"));
  ASSIGN_OR_RETURN(p.budget, r.Get<int64_t>("policy"));
  ASSIGN_OR_RETURN(p.ratio, r.Get<double>("policy"));
  ASSIGN_OR_RETURN(p.window, r.Get<int32_t>("policy"));
  ASSIGN_OR_RETURN(const uint32_t pooling, r.Get<uint32_t>("policy"));
  ASSIGN_OR_RETURN(p.kernel, r.Get<int32_t>("policy"));
  ASSIGN_OR_RETURN(p.beta, r.Get<double>("policy"));
  ASSIGN_OR_RETURN(const uint32_t rounding, r.Get<uint32_t>("policy"));
  if (method > static_cast<uint32_t>(KvMethod::kH2o) ||
      pooling > static_cast<uint32_t>(KvPooling::kAvg) ||
      rounding > static_cast<uint32_t>(BudgetRounding::kOfficial)) {
    return absl::InvalidArgumentError("session file holds an unknown kv policy enum value");
  }
  p.method = static_cast<KvMethod>(method);
  p.pooling = static_cast<KvPooling>(pooling);
  p.rounding = static_cast<BudgetRounding>(rounding);
  RETURN_IF_ERROR(p.Validate());
  return p;
}

absl::Status CheckShape(const SessionRecord& s) {
  if (s.id.empty()) return absl::InvalidArgumentError("session file has an empty id");
  if (s.num_positions < 1 || s.num_positions != static_cast<int64_t>(s.tokens.size())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "session file holds %d positions for %d token ids", s.num_positions, s.tokens.size()));
  }
  if (s.ttl <= absl::ZeroDuration()) return absl::InvalidArgumentError("session ttl not positive");
  for (size_t l = 0; l < s.layers.size(); ++l) {
    const int64_t entries = static_cast<int64_t>(s.layers[l].size()) / s.entry_floats;
    if (entries < 1 || entries > s.num_positions) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "session file layer %d holds %d entries for %d positions", l, entries, s.num_positions));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string EncodeSessionRecord(const SessionRecord& s) {
  Writer w;
  w.out().append(kMagic, sizeof(kMagic));
  w.Put<uint32_t>(kVersion);
  w.PutString(s.fingerprint);
  w.PutString(s.id);
  w.PutString(s.owner);
  PutPolicy(w, s.policy);
  w.Put<int64_t>(absl::ToUnixMillis(s.created));
  w.Put<int64_t>(absl::ToUnixMillis(s.expires));
  w.Put<int64_t>(absl::ToInt64Milliseconds(s.ttl));
  w.Put<uint64_t>(s.tokens.size());
  w.PutArray(s.tokens);
  w.Put<int64_t>(s.num_positions);
  w.Put<uint32_t>(static_cast<uint32_t>(s.layers.size()));
  w.Put<uint64_t>(static_cast<uint64_t>(s.entry_floats));
  for (const std::vector<float>& layer : s.layers) {
    w.Put<uint64_t>(layer.size() / static_cast<size_t>(s.entry_floats));
    w.PutArray(layer);
  }
  w.Put<uint64_t>(Fnv1a(w.out()));
  return std::move(w.out());
}

absl::StatusOr<SessionRecord> DecodeSessionRecord(std::string_view bytes) {
  if (bytes.size() < sizeof(kMagic) + 4 + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic))) {
    return absl::InvalidArgumentError("not a funnel session file");
  }
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 8, 8);
  const std::string_view covered = bytes.substr(0, bytes.size() - 8);
  if (Fnv1a(covered) != stored) return absl::InvalidArgumentError("session file checksum mismatch");
  Reader r(covered.substr(sizeof(kMagic)));
  ASSIGN_OR_RETURN(const uint32_t version, r.Get<uint32_t>("version"));
  if (version != kVersion) {
    return absl::InvalidArgumentError(
        absl::StrFormat("session file version %d, want %d", version, kVersion));
  }
  SessionRecord s;
  ASSIGN_OR_RETURN(s.fingerprint, r.GetString("fingerprint"));
  ASSIGN_OR_RETURN(s.id, r.GetString("id"));
  ASSIGN_OR_RETURN(s.owner, r.GetString("owner"));
  ASSIGN_OR_RETURN(s.policy, GetPolicy(r));
  ASSIGN_OR_RETURN(const int64_t created, r.Get<int64_t>("times"));
  ASSIGN_OR_RETURN(const int64_t expires, r.Get<int64_t>("times"));
  ASSIGN_OR_RETURN(const int64_t ttl, r.Get<int64_t>("times"));
  s.created = absl::FromUnixMillis(created);
  s.expires = absl::FromUnixMillis(expires);
  s.ttl = absl::Milliseconds(ttl);
  ASSIGN_OR_RETURN(const uint64_t num_tokens, r.Get<uint64_t>("tokens"));
  ASSIGN_OR_RETURN(s.tokens, r.GetArray<int32_t>(num_tokens, "tokens"));
  ASSIGN_OR_RETURN(s.num_positions, r.Get<int64_t>("positions"));
  ASSIGN_OR_RETURN(const uint32_t layers, r.Get<uint32_t>("layers"));
  ASSIGN_OR_RETURN(const uint64_t entry_floats, r.Get<uint64_t>("layers"));
  if (layers < 1 || layers > kMaxLayers || entry_floats < 1 || entry_floats > (1u << 20)) {
    return absl::InvalidArgumentError("session file has an impossible cache shape");
  }
  s.entry_floats = static_cast<int64_t>(entry_floats);
  for (uint32_t l = 0; l < layers; ++l) {
    ASSIGN_OR_RETURN(const uint64_t entries, r.Get<uint64_t>("layer"));
    if (entries > (uint64_t{1} << 40) / entry_floats)
      return absl::InvalidArgumentError("layer too long");
    ASSIGN_OR_RETURN(std::vector<float> data, r.GetArray<float>(entries * entry_floats, "layer"));
    s.layers.push_back(std::move(data));
  }
  if (!r.empty()) return absl::InvalidArgumentError("session file has trailing bytes");
  RETURN_IF_ERROR(CheckShape(s));
  return s;
}

}  // namespace funnel
