#include "server/gateway/backend_pool.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/gateway/api_error.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

constexpr absl::string_view kSessionPrefix = "sess-";
constexpr size_t kSessionSuffixHex = 16;

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const std::optional<TlsOptions>& tls) {
  if (!tls) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls->root_certs_pem;
  ssl.pem_private_key = tls->client_key_pem;
  ssl.pem_cert_chain = tls->client_cert_pem;
  return grpc::SslCredentials(ssl);
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address,
                                           const std::optional<TlsOptions>& tls) {
  grpc::ChannelArguments args;
  if (tls && !tls->server_name_override.empty()) {
    args.SetSslTargetNameOverride(tls->server_name_override);
  }
  args.SetMaxReceiveMessageSize(-1);  // long prompt_ids in final messages
  // Reconnect soon after a replica comes back (gRPC's default backoff grows to two minutes).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 5000);
  return grpc::CreateCustomChannel(address, ChannelCredentials(tls), args);
}

bool Contains(const std::vector<size_t>& v, size_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

}  // namespace

std::optional<std::string> ReplicaOfSession(absl::string_view id) {
  if (!absl::StartsWith(id, kSessionPrefix)) return std::nullopt;
  id.remove_prefix(kSessionPrefix.size());
  if (id.size() < kSessionSuffixHex + 2 || id[id.size() - kSessionSuffixHex - 1] != '-') {
    return std::nullopt;
  }
  for (char c : id.substr(id.size() - kSessionSuffixHex)) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return std::string(id.substr(0, id.size() - kSessionSuffixHex - 1));
}

BackendPool::Lease::Lease(BackendPool* pool, size_t index) : pool_(pool), index_(index) {
  pool_->backends_[index_]->outstanding.fetch_add(1, std::memory_order_relaxed);
}

BackendPool::Lease::Lease(Lease&& other) noexcept : pool_(other.pool_), index_(other.index_) {
  other.pool_ = nullptr;
}

BackendPool::Lease& BackendPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    pool_ = other.pool_;
    index_ = other.index_;
    other.pool_ = nullptr;
  }
  return *this;
}

BackendPool::Lease::~Lease() { Release(); }

void BackendPool::Lease::Release() {
  if (pool_ == nullptr) return;
  pool_->backends_[index_]->outstanding.fetch_sub(1, std::memory_order_relaxed);
  pool_ = nullptr;
}

BackendPool::BackendPool(std::vector<std::string> addresses, Options options)
    : BackendPool(std::move(addresses), std::move(options), nullptr) {}

BackendPool::BackendPool(std::vector<std::string> addresses, Options options, ProbeFn probe)
    : options_(std::move(options)), probe_(std::move(probe)) {
  for (std::string& address : addresses) {
    auto b = std::make_unique<Backend>();
    b->channel = MakeChannel(address, options_.tls);
    b->address = std::move(address);
    backends_.push_back(std::move(b));
  }
  if (!probe_) probe_ = [this](size_t index) { return GrpcProbe(index); };
}

BackendPool::~BackendPool() { StopProber(); }

std::unique_ptr<FunnelClient> BackendPool::Client(size_t index, const std::string& api_key) const {
  ClientOptions client_options;
  client_options.target = backends_[index]->address;
  client_options.api_key = api_key;
  client_options.unary_timeout = options_.unary_timeout;
  return std::make_unique<FunnelClient>(backends_[index]->channel, std::move(client_options));
}

absl::StatusOr<v1::ServerInfo> BackendPool::GrpcProbe(size_t index) const {
  ClientOptions client_options;
  client_options.target = backends_[index]->address;
  client_options.api_key = options_.probe_api_key;
  client_options.unary_timeout = options_.probe_timeout;
  FunnelClient client(backends_[index]->channel, client_options);
  return client.GetServerInfo();
}

absl::StatusOr<BackendPool::Lease> BackendPool::PickLeastLoaded(
    const std::string& model, const std::vector<size_t>& exclude) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t n = backends_.size();
  const size_t start = static_cast<size_t>(rotation_.fetch_add(1, std::memory_order_relaxed)) % n;
  std::optional<size_t> best;
  int64_t best_load = std::numeric_limits<int64_t>::max();
  for (size_t k = 0; k < n; ++k) {
    const size_t i = (start + k) % n;
    const Backend& b = *backends_[i];
    if (!b.up || Contains(exclude, i) || (!b.model.empty() && b.model != model)) continue;
    const int64_t load = b.outstanding.load(std::memory_order_relaxed);
    if (load < best_load) {
      best = i;
      best_load = load;
    }
  }
  if (!best) return absl::UnavailableError("no healthy backend can serve the request");
  return Lease(this, *best);
}

absl::StatusOr<BackendPool::Lease> BackendPool::PickForSession(const std::string& session_id) {
  std::optional<std::string> replica = ReplicaOfSession(session_id);
  if (!replica) {
    return WithErrorCode(absl::NotFoundError(absl::StrCat("no session '", session_id, "'")),
                         "session_not_found");
  }
  std::lock_guard<std::mutex> lock(mu_);
  bool owner_down = false;
  bool some_unknown = false;
  for (size_t i = 0; i < backends_.size(); ++i) {
    const Backend& b = *backends_[i];
    some_unknown = some_unknown || b.replica_id.empty();
    if (b.replica_id != *replica) continue;
    if (b.up) return Lease(this, i);
    owner_down = true;
  }
  if (owner_down || some_unknown) {
    return absl::UnavailableError(
        absl::StrCat("the replica that holds session '", session_id, "' is not reachable now"));
  }
  return WithErrorCode(absl::NotFoundError(absl::StrCat("no session '", session_id, "'")),
                       "session_not_found");
}

BackendPool::Lease BackendPool::Acquire(size_t index) { return Lease(this, index); }

absl::Status BackendPool::CheckModel(const std::string& model) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& b : backends_) {
    if (b->model.empty() || b->model == model) return absl::OkStatus();
  }
  return WithErrorCode(absl::NotFoundError(absl::StrCat("the model '", model, "' does not exist")),
                       "model_not_found");
}

void BackendPool::ReportUnavailable(size_t index) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    Backend& b = *backends_[index];
    if (!b.up) return;
    b.up = false;
    b.failures = 1;
    b.next_probe = absl::Now() + options_.min_backoff;
  }
  spdlog::warn("backend {} is unavailable: marked down", backends_[index]->address);
  wake_.notify_all();
}

void BackendPool::LearnSession(size_t index, const std::string& session_id) {
  std::optional<std::string> replica = ReplicaOfSession(session_id);
  if (!replica) return;
  std::lock_guard<std::mutex> lock(mu_);
  backends_[index]->replica_id = *replica;
}

std::vector<size_t> BackendPool::UpBackends() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<size_t> up;
  for (size_t i = 0; i < backends_.size(); ++i) {
    if (backends_[i]->up) up.push_back(i);
  }
  return up;
}

bool BackendPool::AnyUp() const { return !UpBackends().empty(); }

std::vector<BackendSnapshot> BackendPool::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<BackendSnapshot> out;
  for (const auto& b : backends_) {
    out.push_back({b->address, b->up, b->outstanding.load(std::memory_order_relaxed), b->replica_id,
                   b->model});
  }
  return out;
}

absl::Duration BackendPool::Backoff(int failures) const {
  absl::Duration d = options_.min_backoff;
  for (int i = 1; i < failures && d < options_.max_backoff; ++i) d *= 2;
  return std::min(d, options_.max_backoff);
}

void BackendPool::Apply(size_t index, const absl::StatusOr<v1::ServerInfo>& result,
                        absl::Time now) {
  Backend& b = *backends_[index];
  const bool auth_only =
      absl::IsUnauthenticated(result.status()) || absl::IsPermissionDenied(result.status());
  const bool was_up = b.up;
  b.up = result.ok() || auth_only;
  if (result.ok()) {
    b.replica_id = result->replica_id();
    b.model = result->model().id();
  }
  b.failures = b.up ? 0 : b.failures + 1;
  b.next_probe = now + (b.up ? options_.probe_interval : Backoff(b.failures));
  // Logged: every change, and the first of a run of failed probes (so a backend never reached,
  // say for a wrong address or TLS set-up, shows at once).
  const bool first_failure = !b.up && b.failures == 1;
  if (b.up != was_up || first_failure || (auth_only && !b.warned_auth)) {
    if (b.up) {
      spdlog::info("backend {} is up (replica '{}', model '{}')", b.address, b.replica_id, b.model);
    } else {
      spdlog::warn("backend {} is down: {}", b.address, result.status().ToString());
    }
    if (auth_only && !b.warned_auth) {
      b.warned_auth = true;
      spdlog::warn(
          "backend {} refused the probe key: its replica id and model stay unknown "
          "(give the gateway the servers' key file)",
          b.address);
    }
  }
}

absl::Time BackendPool::ProbeDue(absl::Time now) {
  std::vector<size_t> due;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < backends_.size(); ++i) {
      if (backends_[i]->next_probe <= now) due.push_back(i);
    }
  }
  std::vector<absl::StatusOr<v1::ServerInfo>> results;
  for (size_t i : due) results.push_back(probe_(i));  // no lock held during the RPCs
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t k = 0; k < due.size(); ++k) Apply(due[k], results[k], now);
  absl::Time next = absl::InfiniteFuture();
  for (const auto& b : backends_) next = std::min(next, b->next_probe);
  return next;
}

void BackendPool::ProberLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    lock.unlock();
    const absl::Time next = ProbeDue(absl::Now());
    lock.lock();
    if (stopping_) break;
    // Wake at the next due probe, or earlier when a request reports a backend down.
    absl::Time earliest = next;
    for (const auto& b : backends_) earliest = std::min(earliest, b->next_probe);
    if (earliest > absl::Now()) {
      wake_.wait_until(lock, absl::ToChronoTime(earliest));
    }
  }
}

void BackendPool::StartProber() {
  std::lock_guard<std::mutex> lock(mu_);
  if (prober_.joinable()) return;
  stopping_ = false;
  prober_ = std::thread([this] { ProberLoop(); });
}

void BackendPool::StopProber() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (prober_.joinable()) prober_.join();
}

}  // namespace funnel
