// The funnel-server replicas behind the gateway: one gRPC channel each, health, and routing.
//
// Routing (DESIGN.md section 11): a plain request goes to the healthy backend with the fewest
// outstanding requests among those serving its model (ties rotate); a session id
// "sess-<replica>-<16 hex>" names its owning replica, whose backend is learned from GetServerInfo
// (or from the ids CreateSession returns), so any gateway instance routes it there without shared
// state.
//
// Health: every backend starts down and is probed at once. A prober thread calls GetServerInfo on
// each backend: every probe_interval while it is up, with exponential backoff (min_backoff
// doubling up to max_backoff) while it is down. A probe answered with UNAUTHENTICATED or
// PERMISSION_DENIED still proves the backend up (its replica id then stays unknown). A request
// that fails with UNAVAILABLE marks its backend down at once (ReportUnavailable).
//
// Thread rules: every public method is thread-safe. A Lease must not outlive its pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "client/funnel_client.h"
#include "funnel/v1/inference.pb.h"
#include "grpcpp/channel.h"

namespace funnel {

// "sess-<replica>-<16 hex>" → replica; nullopt for any other shape.
std::optional<std::string> ReplicaOfSession(absl::string_view session_id);

struct BackendSnapshot {
  std::string address;
  bool up = false;
  int64_t outstanding = 0;
  std::string replica_id;  // "" until learned
  std::string model;       // "" until learned
};

class BackendPool {
 public:
  struct Options {
    absl::Duration probe_interval = absl::Seconds(2);
    absl::Duration min_backoff = absl::Milliseconds(250);
    absl::Duration max_backoff = absl::Seconds(10);
    absl::Duration probe_timeout = absl::Seconds(2);
    absl::Duration unary_timeout = absl::Seconds(60);  // session and model calls
    std::string probe_api_key;                         // "" when the servers need none
    std::optional<TlsOptions> tls;                     // every channel's TLS; unset: plaintext
  };
  // Asks backend `index` for its ServerInfo.
  using ProbeFn = std::function<absl::StatusOr<v1::ServerInfo>(size_t index)>;

  // Creates one channel per address (over options.tls when set); probes call GetServerInfo
  // over it.
  BackendPool(std::vector<std::string> addresses, Options options);
  // Probes through `probe` instead (tests); channels are still created (lazily connecting).
  BackendPool(std::vector<std::string> addresses, Options options, ProbeFn probe);
  ~BackendPool();  // StopProber()

  BackendPool(const BackendPool&) = delete;
  BackendPool& operator=(const BackendPool&) = delete;

  // A claim on one backend for the duration of a request (counts as outstanding).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    ~Lease();

    size_t index() const { return index_; }
    bool valid() const { return pool_ != nullptr; }

   private:
    friend class BackendPool;
    Lease(BackendPool* pool, size_t index);
    void Release();

    BackendPool* pool_ = nullptr;
    size_t index_ = 0;
  };

  size_t size() const { return backends_.size(); }
  const std::string& address(size_t index) const { return backends_[index]->address; }
  std::shared_ptr<grpc::Channel> channel(size_t index) const { return backends_[index]->channel; }
  // A client of backend `index` over its shared channel that sends `api_key` (may be "").
  std::unique_ptr<FunnelClient> Client(size_t index, const std::string& api_key) const;

  // The least-loaded up backend serving `model` (or whose model is not known yet), skipping
  // `exclude`. UNAVAILABLE when there is none.
  absl::StatusOr<Lease> PickLeastLoaded(const std::string& model,
                                        const std::vector<size_t>& exclude);
  // The backend owning the session. NOT_FOUND when no backend has its replica id (or the id has
  // another shape); UNAVAILABLE when the owner is down, or when some backend has not been
  // reached yet (its replica id is unknown).
  absl::StatusOr<Lease> PickForSession(const std::string& session_id);
  // A lease on one given backend (fan-out over all of them).
  Lease Acquire(size_t index);

  // NOT_FOUND (code model_not_found) when every backend's model is known and none is `model`.
  absl::Status CheckModel(const std::string& model) const;

  void ReportUnavailable(size_t index);
  // Learns the replica of a session id a backend returned.
  void LearnSession(size_t index, const std::string& session_id);

  std::vector<size_t> UpBackends() const;
  bool AnyUp() const;
  std::vector<BackendSnapshot> Snapshot() const;

  // Runs the probes due at `now` (the prober thread's step; tests call it directly) and returns
  // when the next one is due.
  absl::Time ProbeDue(absl::Time now);
  // Starts / stops the prober thread.
  void StartProber();
  void StopProber();

 private:
  struct Backend {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::atomic<int64_t> outstanding{0};
    // Guarded by mu_:
    bool up = false;
    int failures = 0;  // consecutive failed probes
    absl::Time next_probe = absl::InfinitePast();
    std::string replica_id;
    std::string model;
    bool warned_auth = false;
  };

  void Apply(size_t index, const absl::StatusOr<v1::ServerInfo>& result, absl::Time now);
  absl::Duration Backoff(int failures) const;
  absl::StatusOr<v1::ServerInfo> GrpcProbe(size_t index) const;
  void ProberLoop();

  Options options_;
  ProbeFn probe_;
  std::vector<std::unique_ptr<Backend>> backends_;
  std::atomic<uint64_t> rotation_{0};

  mutable std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;  // guarded by mu_
  std::thread prober_;
};

}  // namespace funnel
