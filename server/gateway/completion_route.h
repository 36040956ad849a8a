// POST /v1/completions and /v1/chat/completions: parse and validate, fan the choices out to the
// backends (ChoiceFanout), then answer with one JSON object or, with "stream": true, with
// Server-Sent Events.
//
// Streaming contract: the handler waits for the first upstream event, so an error before any
// token (bad input the server refuses, queue full, no backend) is still a plain HTTP error with
// its status code. After that the response is 200 and text/event-stream: chat streams open every
// choice with a role chunk; then token chunks, per choice a finish chunk, with
// stream_options.include_usage a usage chunk (choices: []), and "data: [DONE]". A later upstream
// error becomes one `data: {"error": {...}}` event before [DONE]. When a write to the client
// fails (it went away), every upstream generation is cancelled, which frees its KV blocks on
// the server.
//
// Thread rules: Handle runs on any HTTP worker thread; the route itself is immutable.
#pragma once

#include <memory>
#include <mutex>
#include <random>
#include <string>

#include "absl/time/time.h"
#include "httplib.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/openai_request.h"
#include "server/gateway/request_scope.h"

namespace funnel {

class CompletionRoute {
 public:
  struct Options {
    int32_t max_choices = 16;
    absl::Duration timeout = absl::InfiniteDuration();  // per upstream generation
  };

  CompletionRoute(BackendPool* pool, Options options);

  void Handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
              std::shared_ptr<RequestScope> scope);

 private:
  std::string NewId(Endpoint endpoint);

  BackendPool* pool_;
  Options options_;
  std::mutex rng_mu_;
  std::mt19937_64 rng_;  // guarded by rng_mu_
};

}  // namespace funnel
