#include "server/gateway/completion_route.h"

#include <ctime>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "server/gateway/choice_fanout.h"
#include "server/gateway/http_reply.h"
#include "server/gateway/openai_response.h"
#include "spdlog/spdlog.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

// Collects every choice to its end and answers with one JSON object (or the first error).
void ReplyCollected(ChoiceFanout& fanout, const ResponseHeader& header, int32_t n,
                    httplib::Response& res, RequestScope& scope) {
  std::vector<ChoiceOutput> outputs(fanout.num_choices());
  absl::Status error;
  fanout.DrainInto([&](ChoiceEvent& event) {
    ChoiceOutput& out = outputs[static_cast<size_t>(event.index)];
    switch (event.kind) {
      case ChoiceEvent::Kind::kDelta:
        out.text += event.delta.text();
        if (header.top_logprobs >= 0) out.tokens.push_back(std::move(event.delta));
        break;
      case ChoiceEvent::Kind::kFinal:
        out.text += event.final.text();
        out.final = std::move(event.final);
        break;
      case ChoiceEvent::Kind::kError:
        if (error.ok()) {
          error = event.status;
          fanout.Cancel();  // the other choices are of no use now
        }
        break;
    }
  });
  if (!error.ok()) return ReplyStatus(res, error, &scope);
  ReplyJson(res, 200, CompletionJson(header, outputs, n), &scope);
}

// One SSE response: owns the fan-out and writes its events as they come. Its state is used by
// one thread at a time: the HTTP thread, then (inside DrainInto) the fan-out's threads under the
// fan-out's lock.
class EventStream {
 public:
  EventStream(std::unique_ptr<ChoiceFanout> fanout, ResponseHeader header, int32_t n,
              bool include_usage, ChoiceEvent first, std::shared_ptr<RequestScope> scope)
      : fanout_(std::move(fanout)),
        header_(std::move(header)),
        n_(n),
        include_usage_(include_usage),
        first_(std::move(first)),
        scope_(std::move(scope)),
        offsets_(fanout_->num_choices(), 0),
        finals_(fanout_->num_choices()) {}

  // Writes the whole stream (on the HTTP thread, then on the fan-out's threads); false when the
  // client went away (upstream cancelled).
  bool WriteAll(httplib::DataSink& sink);

 private:
  bool Write(httplib::DataSink& sink, const std::string& data) {
    return sink.write(data.data(), data.size());
  }
  bool WriteEvent(httplib::DataSink& sink, ChoiceEvent& event);
  bool WriteDelta(httplib::DataSink& sink, const ChoiceEvent& event);
  bool ClientGone();

  std::unique_ptr<ChoiceFanout> fanout_;
  const ResponseHeader header_;
  const int32_t n_;
  const bool include_usage_;
  ChoiceEvent first_;  // received before the response was committed
  std::shared_ptr<RequestScope> scope_;
  std::vector<int64_t> offsets_;  // characters streamed per choice
  std::vector<v1::GenerateFinal> finals_;
  bool failed_ = false;  // an error event was written
  bool first_token_recorded_ = false;
};

bool EventStream::ClientGone() {
  fanout_->Cancel();
  if (scope_->metrics() != nullptr) scope_->metrics()->RecordStreamDisconnect();
  scope_->set_status(499);  // nginx's "client closed request"
  spdlog::info("{}: client went away mid-stream; upstream cancelled", header_.id);
  return false;
}

bool EventStream::WriteDelta(httplib::DataSink& sink, const ChoiceEvent& event) {
  const v1::TokenDelta& delta = event.delta;
  if (delta.text().empty() && header_.top_logprobs < 0) return true;  // nothing to show yet
  const size_t i = static_cast<size_t>(event.index);
  const Json chunk = TokenChunk(header_, event.index, delta, offsets_[i], include_usage_);
  offsets_[i] += Utf8Length(delta.text());
  if (!first_token_recorded_ && scope_->metrics() != nullptr) {
    first_token_recorded_ = true;
    scope_->metrics()->RecordTimeToFirstToken(scope_->elapsed_seconds());
  }
  return Write(sink, SseEvent(chunk));
}

bool EventStream::WriteEvent(httplib::DataSink& sink, ChoiceEvent& event) {
  switch (event.kind) {
    case ChoiceEvent::Kind::kDelta:
      return WriteDelta(sink, event);
    case ChoiceEvent::Kind::kFinal: {
      const v1::GenerateFinal& final = event.final;
      if (!final.text().empty() &&
          !Write(sink, SseEvent(TextChunk(header_, event.index, final.text(), include_usage_)))) {
        return false;
      }
      finals_[static_cast<size_t>(event.index)] = std::move(event.final);
      return Write(sink,
                   SseEvent(FinishChunk(header_, event.index,
                                        finals_[static_cast<size_t>(event.index)].finish_reason(),
                                        include_usage_)));
    }
    case ChoiceEvent::Kind::kError: {
      if (failed_) return true;  // the others' cancellations that follow the first error
      failed_ = true;
      fanout_->Cancel();
      const ApiError error = ApiErrorFromStatus(event.status);
      scope_->set_status(error.http_status);
      spdlog::info("{}: upstream error mid-stream: {}", header_.id, event.status.ToString());
      return Write(sink, SseEvent(ApiErrorJson(error)));
    }
  }
  return true;
}

bool EventStream::WriteAll(httplib::DataSink& sink) {
  if (header_.endpoint == Endpoint::kChatCompletions) {
    for (size_t i = 0; i < fanout_->num_choices(); ++i) {
      if (!Write(sink, SseEvent(RoleChunk(header_, static_cast<int32_t>(i), include_usage_)))) {
        return ClientGone();
      }
    }
  }
  bool gone = !WriteEvent(sink, first_);
  if (gone) fanout_->Cancel();
  // Every later event is written on the thread that read it from the backend.
  fanout_->DrainInto([&](ChoiceEvent& event) {
    if (gone) return;  // the cancelled choices' last events
    gone = !WriteEvent(sink, event);
    if (gone) fanout_->Cancel();
  });
  if (gone) return ClientGone();
  if (include_usage_ && !failed_) {
    std::vector<const v1::Usage*> usages;
    for (const v1::GenerateFinal& f : finals_) usages.push_back(&f.usage());
    if (!Write(sink, SseEvent(UsageChunk(header_, UsageJson(usages, n_))))) return ClientGone();
  }
  if (!Write(sink, kSseDone)) return ClientGone();
  sink.done();
  return true;
}

}  // namespace

CompletionRoute::CompletionRoute(BackendPool* pool, Options options)
    : pool_(pool), options_(options), rng_(std::random_device{}()) {}

std::string CompletionRoute::NewId(Endpoint endpoint) {
  uint64_t bits;
  {
    std::lock_guard<std::mutex> lock(rng_mu_);
    bits = rng_();
  }
  return absl::StrFormat("%s-%016x", endpoint == Endpoint::kChatCompletions ? "chatcmpl" : "cmpl",
                         bits);
}

void CompletionRoute::Handle(Endpoint endpoint, const httplib::Request& req, httplib::Response& res,
                             std::shared_ptr<RequestScope> scope) {
  absl::StatusOr<CompletionRequest> parsed =
      ParseCompletionRequest(endpoint, req.body, {.max_choices = options_.max_choices});
  if (!parsed.ok()) return ReplyStatus(res, parsed.status(), scope.get());
  if (absl::Status s = pool_->CheckModel(parsed->model); !s.ok()) {
    return ReplyStatus(res, s, scope.get());
  }
  ResponseHeader header{endpoint, NewId(endpoint), parsed->model,
                        static_cast<int64_t>(std::time(nullptr)), parsed->top_logprobs};
  res.set_header("X-Request-Id", header.id);
  FanoutOptions fanout_options{parsed->model, parsed->session_id, scope->api_key(), header.id,
                               options_.timeout};
  auto fanout = std::make_unique<ChoiceFanout>(pool_, scope->metrics(), std::move(parsed->choices),
                                               fanout_options);
  fanout->Start();
  if (!parsed->stream) return ReplyCollected(*fanout, header, parsed->n, res, *scope);

  std::optional<ChoiceEvent> first = fanout->Next();  // waits for the first token (or error)
  if (!first) return ReplyStatus(res, absl::InternalError("no upstream event"), scope.get());
  if (first->kind == ChoiceEvent::Kind::kError) {
    return ReplyStatus(res, first->status, scope.get());
  }
  auto stream = std::make_shared<EventStream>(std::move(fanout), std::move(header), parsed->n,
                                              parsed->include_usage, std::move(*first), scope);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream](size_t /*offset*/, httplib::DataSink& sink) { return stream->WriteAll(sink); });
}

}  // namespace funnel
