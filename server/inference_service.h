// funnel.v1.Inference on gRPC's synchronous API: each RPC runs on a gRPC thread. Generate
// validates and converts the request (auth → input → sampling → KV policy), submits it to the
// engine and streams the engine's OutputStream: one message per token, then the final message.
// It polls the call for cancellation between events (client gone, deadline passed) and then asks
// the engine to drop the request, which frees its KV blocks at the next step.
//
// Thread rules: every method may run on any gRPC thread at once; the engine, encoder, auth and
// metrics are thread-safe and must outlive the service.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "funnel/v1/inference.grpc.pb.h"
#include "runtime/engine/engine.h"
#include "server/auth.h"
#include "server/prompt_encoder.h"
#include "server/server_metrics.h"

namespace funnel {

// What ListModels and GetServerInfo report; fixed at startup.
struct ServedModelInfo {
  std::string served_name;
  int64_t context_length = 0;
  int64_t vocab_size = 0;
  int32_t num_layers = 0;
  int32_t block_size = 0;
  int64_t block_bytes = 0;
  KvPolicy default_kv_policy;
  std::string replica_id;
  int32_t max_num_seqs = 0;
  int64_t max_prompt_tokens = 0;  // effective
  std::string version;
  std::string chat_template;  // "" when the model's is not recognised
};

class InferenceService final : public v1::Inference::Service {
 public:
  InferenceService(Engine* engine, const PromptEncoder* encoder, const ApiKeyAuth* auth,
                   ServerMetrics* metrics, ServedModelInfo info);

  // From now on new Generate and CreateSession calls fail with UNAVAILABLE.
  void StartDraining() { draining_.store(true); }

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override;
  grpc::Status CreateSession(grpc::ServerContext* context, const v1::CreateSessionRequest* request,
                             v1::Session* response) override;
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::Session* response) override;
  grpc::Status ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest* request,
                            v1::ListSessionsResponse* response) override;
  grpc::Status DeleteSession(grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status GetServerInfo(grpc::ServerContext* context, const v1::GetServerInfoRequest* request,
                             v1::ServerInfo* response) override;

 private:
  // Per-request bookkeeping of one Generate call.
  struct Call {
    std::string id;
    std::string owner;
    absl::Time start;
    std::optional<absl::Time> first_token;
    int64_t tokens = 0;
  };

  absl::StatusOr<std::string> Authenticate(const grpc::ServerContext& context) const;
  absl::StatusOr<std::string> AssignId(const std::string& requested);
  absl::StatusOr<std::vector<int32_t>> EncodeInput(const v1::GenerateRequest& request) const;
  absl::StatusOr<GenerateRequest> BuildRequest(const v1::GenerateRequest& request, Call& call,
                                               const grpc::ServerContext& context);
  grpc::Status StreamEvents(grpc::ServerContext* context, OutputStream& stream, Call& call,
                            const std::vector<int32_t>& prompt,
                            grpc::ServerWriter<v1::GenerateResponse>* writer);
  grpc::Status Finish(const FinalEvent& final, Call& call, const std::vector<int32_t>& prompt,
                      grpc::ServerWriter<v1::GenerateResponse>* writer);
  void StopRequest(Call& call, OutputStream& stream);
  absl::StatusOr<std::vector<int32_t>> EncodeSessionContext(
      const v1::CreateSessionRequest& request) const;
  void FillModel(v1::Model* model) const;
  grpc::Status Reject(const std::string& id, const absl::Status& status);
  // Reserves a request id for `owner` before submission; false when it is already live.
  bool Reserve(const std::string& id, const std::string& owner);
  // Attaches the submitted stream; true when a Cancel arrived in between.
  bool Attach(const std::string& id, std::shared_ptr<OutputStream> stream);
  void Unregister(const std::string& id);

  Engine* engine_;
  const PromptEncoder* encoder_;
  const ApiKeyAuth* auth_;
  ServerMetrics* metrics_;
  const ServedModelInfo info_;
  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> next_id_{1};

  struct Live {
    std::string owner;
    std::shared_ptr<OutputStream> stream;  // null until submitted
    bool cancel_requested = false;
  };
  std::mutex mu_;
  std::map<std::string, Live> live_;  // streaming requests, for Cancel
};

}  // namespace funnel
