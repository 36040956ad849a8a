// A thin synchronous C++ client for funnel-server (gRPC `funnel.v1.Inference`).
//
// Every call returns absl::Status / StatusOr; gRPC codes map one to one onto absl codes
// (FromGrpcStatus is the only grpc::Status → absl::Status point on the client side). The API key
// goes out as "authorization: Bearer <key>" metadata on every call. Unary calls get a deadline
// (ClientOptions::unary_timeout); Generate has none unless asked for.
//
// Thread safety: a FunnelClient is safe to share between threads (each call has its own
// ClientContext; the channel multiplexes them). A GenerateCanceller may be triggered from any
// thread while the Generate it was passed to runs on another.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "funnel/v1/inference.grpc.pb.h"
#include "funnel/v1/inference.pb.h"

namespace funnel {

// TLS for the channel. Empty PEM strings take gRPC's defaults (system roots, no client cert).
struct TlsOptions {
  std::string root_certs_pem;
  std::string client_key_pem;  // with client_cert_pem: mutual TLS
  std::string client_cert_pem;
  std::string server_name_override;  // for tests against a cert issued to another name
};

struct ClientOptions {
  std::string target;   // "host:port" (any gRPC target URI)
  std::string api_key;  // empty: no authorization metadata
  // Deadline of each unary call (sessions, models, info, cancel); infinite: none.
  absl::Duration unary_timeout = absl::Seconds(60);
  // Deadline of each Generate stream unless GenerateOptions says otherwise; infinite: none.
  absl::Duration generate_timeout = absl::InfiniteDuration();
  // false: calls fail at once with UNAVAILABLE while the server cannot be reached.
  // true: they wait (up to their deadline) for it to come up.
  bool wait_for_ready = false;
  // Give this client its own TCP connection instead of sharing one with other clients of the
  // same target in this process (load generators want one connection per simulated user).
  bool own_connection = false;
  std::optional<TlsOptions> tls;  // unset: plaintext
};

// The one grpc::Status → absl::Status mapping (codes are numerically identical).
absl::Status FromGrpcStatus(const grpc::Status& status);

// Lets another thread stop a running Generate (the RPC is cancelled; Generate returns CANCELLED).
// Reusable across calls only sequentially; Cancel() before the call makes it fail at once.
class GenerateCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class FunnelClient;
  void Attach(grpc::ClientContext* context);  // returns with the context registered
  void Detach();

  mutable std::mutex mu_;
  bool cancelled_ = false;
  grpc::ClientContext* context_ = nullptr;
};

// Called for every token delta, on the calling thread of Generate. Return false to stop the
// stream (Generate then returns CANCELLED).
using DeltaCallback = std::function<bool(const v1::TokenDelta& delta)>;

struct GenerateOptions {
  DeltaCallback on_delta;                  // may be empty
  GenerateCanceller* canceller = nullptr;  // may be null
  std::optional<absl::Duration> timeout;   // overrides ClientOptions::generate_timeout
};

// The whole of one Generate stream.
struct GenerateResult {
  std::string request_id;
  std::vector<int32_t> output_ids;  // every delta's token, in order
  std::string text;                 // the deltas' text plus the final message's text
  v1::GenerateFinal final;          // finish reason, usage, prompt ids
  // Measured on the client from the start of the call.
  double ttft_ms = 0.0;   // to the first delta (0 when none came)
  double total_ms = 0.0;  // to the end of the stream
};

// "stop" / "length" (the names `funnel run --json` prints); "" when unspecified.
std::string FinishReasonName(v1::FinishReason reason);

class FunnelClient {
 public:
  // Builds the channel (connects lazily, on the first call). Fails only on bad options.
  static absl::StatusOr<std::unique_ptr<FunnelClient>> Create(const ClientOptions& options);
  // Over an existing channel (tests, in-process servers).
  FunnelClient(std::shared_ptr<grpc::Channel> channel, ClientOptions options);
  ~FunnelClient();

  FunnelClient(const FunnelClient&) = delete;
  FunnelClient& operator=(const FunnelClient&) = delete;

  // Streams one generation. A stream that ends without a final message is INTERNAL.
  absl::StatusOr<GenerateResult> Generate(const v1::GenerateRequest& request,
                                          const GenerateOptions& options = {});
  // Cancels a request by id (any client may; NOT_FOUND when unknown or finished).
  absl::Status Cancel(const std::string& request_id);

  absl::StatusOr<v1::Session> CreateSession(const v1::CreateSessionRequest& request);
  absl::StatusOr<v1::Session> GetSession(const std::string& session_id);
  absl::StatusOr<std::vector<v1::Session>> ListSessions();
  absl::Status DeleteSession(const std::string& session_id);

  absl::StatusOr<std::vector<v1::Model>> ListModels();
  absl::StatusOr<v1::ServerInfo> GetServerInfo();

  // Waits until the channel is connected (or `timeout` passes: DEADLINE_EXCEEDED).
  absl::Status WaitForConnected(absl::Duration timeout);

  const ClientOptions& options() const { return options_; }

 private:
  // Sets metadata, deadline and wait-for-ready on a fresh context.
  void Prepare(grpc::ClientContext& context, absl::Duration timeout) const;
  // Runs one unary call (`call(stub, context, response)`) under unary_timeout.
  template <typename Response, typename Call>
  absl::StatusOr<Response> Unary(Call&& call);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inference::Stub> stub_;
};

}  // namespace funnel
