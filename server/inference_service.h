// funnel.v1.Inference. Generate, Cancel and the read-only unary RPCs run on gRPC's callback API;
// CreateSession and DeleteSession wait for the engine thread (a whole prefill, or one step) and
// so stay on the synchronous API, where blocking holds a thread of gRPC's sync pool rather than
// one of the few callback threads.
//
// Generate validates and converts the request (auth → input → sampling → KV policy), submits it
// to the engine and streams the engine's OutputStream through a GenerateReactor: one message per
// token as the engine produces it (at most one write in flight; later tokens wait in order), then
// the final message and the status. A client that cancels, goes away or passes its deadline
// (OnCancel, or a failed write) makes the reactor ask the engine to drop the request at once;
// its KV blocks are freed at the next engine step.
//
// No thread waits for a stream: the reactor is the OutputStream's listener, called on the engine
// thread after each event, and hands the events to gRPC without blocking.
//
// Thread rules: every RPC method may run on any gRPC thread at once; the engine, encoder, auth
// and metrics are thread-safe and must outlive the service, and the grpc::Server must be shut
// down before the service is destroyed. A listener call may come after its call is done; it then
// finds the reactor gone (weak reference) or ignores the event.
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
  int64_t pool_blocks = 0;  // KV pool size (fixed; the engine's stats lag its start)
  KvPolicy default_kv_policy;
  std::string replica_id;
  int32_t max_num_seqs = 0;
  int64_t max_prompt_tokens = 0;  // effective
  std::string version;
  std::string chat_template;  // "" when the model's is not recognised
};

// The methods on the callback API (see the file comment); the others stay synchronous.
using InferenceServiceBase = v1::Inference::WithCallbackMethod_Generate<
    v1::Inference::WithCallbackMethod_Cancel<v1::Inference::WithCallbackMethod_GetSession<
        v1::Inference::WithCallbackMethod_ListSessions<v1::Inference::WithCallbackMethod_ListModels<
            v1::Inference::WithCallbackMethod_GetServerInfo<v1::Inference::Service>>>>>>;

class InferenceService final : public InferenceServiceBase {
 public:
  InferenceService(Engine* engine, const PromptEncoder* encoder, const ApiKeyAuth* auth,
                   ServerMetrics* metrics, ServedModelInfo info);

  // From now on new Generate and CreateSession calls fail with UNAVAILABLE.
  void StartDraining() { draining_.store(true); }

  // Callback API.
  grpc::ServerWriteReactor<v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* context, const v1::GenerateRequest* request) override;
  grpc::ServerUnaryReactor* Cancel(grpc::CallbackServerContext* context,
                                   const v1::CancelRequest* request,
                                   v1::CancelResponse* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;

  // Synchronous API: both block until the engine thread has done them.
  grpc::Status CreateSession(grpc::ServerContext* context, const v1::CreateSessionRequest* request,
                             v1::Session* response) override;
  grpc::Status DeleteSession(grpc::ServerContext* context, const v1::DeleteSessionRequest* request,
                             v1::DeleteSessionResponse* response) override;

 private:
  class GenerateReactor;

  // Per-request bookkeeping of one Generate call.
  struct Call {
    std::string id;
    std::string owner;
    absl::Time start;
    std::optional<absl::Time> first_token;
    int64_t tokens = 0;
    std::vector<int32_t> prompt;  // the ids fed, echoed in the final message
  };

  absl::StatusOr<std::string> Authenticate(const grpc::ServerContextBase& context) const;
  absl::StatusOr<std::string> AssignId(const std::string& requested);
  // The validated engine request (GenerateRequestFromProto) with the call's id, owner and
  // deadline.
  absl::StatusOr<GenerateRequest> BuildRequest(const v1::GenerateRequest& request, const Call& call,
                                               const grpc::ServerContextBase& context);
  // Validates and submits: the running request's stream, or the status to refuse the call with
  // (already logged and counted).
  absl::StatusOr<std::shared_ptr<OutputStream>> StartGenerate(
      const grpc::ServerContextBase& context, const v1::GenerateRequest& request, Call& call);
  // Logs and records the end of a request that reached its FinalEvent. When the status is OK,
  // `msg` holds the final message to send before finishing.
  grpc::Status EndRequest(const FinalEvent& final, Call& call, v1::GenerateResponse* msg);
  // Asks the engine to drop a running request (client gone, deadline, Cancel before attach).
  void StopRequest(const std::string& id, OutputStream& stream);
  void FillModel(v1::Model* model) const;
  absl::Status Reject(const std::string& id, const absl::Status& status);
  // Reserves a request id for `owner` before submission; false when it is already live.
  bool Reserve(const std::string& id, const std::string& owner);
  // Attaches the submitted stream; true when a Cancel arrived in between.
  bool Attach(const std::string& id, std::shared_ptr<OutputStream> stream);
  void Unregister(const std::string& id);

  // The bodies of the unary callback methods.
  grpc::Status DoCancel(const grpc::ServerContextBase& context, const v1::CancelRequest& request);
  grpc::Status DoGetSession(const grpc::ServerContextBase& context,
                            const v1::GetSessionRequest& request, v1::Session* response);
  grpc::Status DoListSessions(const grpc::ServerContextBase& context,
                              v1::ListSessionsResponse* response);
  grpc::Status DoListModels(const grpc::ServerContextBase& context,
                            v1::ListModelsResponse* response);
  grpc::Status DoGetServerInfo(const grpc::ServerContextBase& context, v1::ServerInfo* response);

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
