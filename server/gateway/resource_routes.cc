#include "server/gateway/resource_routes.h"

#include <map>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/gateway/api_error.h"
#include "server/gateway/http_reply.h"
#include "server/gateway/openai_request.h"
#include "server/gateway/openai_response.h"

namespace funnel {
namespace {

using Json = nlohmann::json;

// The server's NOT_FOUND for a session, with OpenAI-style code.
absl::Status SessionError(absl::Status status) {
  return absl::IsNotFound(status) ? WithErrorCode(std::move(status), "session_not_found") : status;
}

// Calls `call(client)` on every up backend; the first failure wins unless another backend
// answered (a replica that just went down does not hide the others).
template <typename Result, typename Call>
absl::StatusOr<std::vector<std::pair<size_t, Result>>> OnEveryBackend(BackendPool& pool,
                                                                      const std::string& api_key,
                                                                      Call call) {
  const std::vector<size_t> up = pool.UpBackends();
  if (up.empty()) return absl::UnavailableError("no healthy backend");
  std::vector<std::pair<size_t, Result>> results;
  absl::Status first_error;
  for (size_t index : up) {
    BackendPool::Lease lease = pool.Acquire(index);
    absl::StatusOr<Result> r = call(*pool.Client(index, api_key));
    if (r.ok()) {
      results.emplace_back(index, *std::move(r));
      continue;
    }
    if (absl::IsUnavailable(r.status())) pool.ReportUnavailable(index);
    // Auth failures are the caller's, whatever the others say.
    if (absl::IsUnauthenticated(r.status())) return r.status();
    if (first_error.ok()) first_error = r.status();
  }
  if (results.empty()) return first_error;
  return results;
}

absl::StatusOr<std::vector<v1::Model>> AllModels(BackendPool& pool, const std::string& api_key) {
  auto results = OnEveryBackend<std::vector<v1::Model>>(
      pool, api_key, [](FunnelClient& client) { return client.ListModels(); });
  if (!results.ok()) return results.status();
  std::map<std::string, v1::Model> by_id;
  for (auto& [index, models] : *results) {
    for (v1::Model& m : models) by_id.emplace(m.id(), std::move(m));
  }
  std::vector<v1::Model> out;
  for (auto& [id, m] : by_id) out.push_back(std::move(m));
  return out;
}

}  // namespace

std::string ResourceRoutes::ModelOf(size_t index) const {
  const std::vector<BackendSnapshot> snapshot = pool_->Snapshot();
  return index < snapshot.size() ? snapshot[index].model : std::string();
}

void ResourceRoutes::ListModels(httplib::Response& res, RequestScope& scope) const {
  absl::StatusOr<std::vector<v1::Model>> models = AllModels(*pool_, scope.api_key());
  if (!models.ok()) return ReplyStatus(res, models.status(), &scope);
  Json data = Json::array();
  for (const v1::Model& m : *models) data.push_back(ModelJson(m));
  ReplyJson(res, 200, {{"object", "list"}, {"data", std::move(data)}}, &scope);
}

void ResourceRoutes::GetModel(const std::string& id, httplib::Response& res,
                              RequestScope& scope) const {
  absl::StatusOr<std::vector<v1::Model>> models = AllModels(*pool_, scope.api_key());
  if (!models.ok()) return ReplyStatus(res, models.status(), &scope);
  for (const v1::Model& m : *models) {
    if (m.id() == id) return ReplyJson(res, 200, ModelJson(m), &scope);
  }
  ReplyStatus(
      res,
      WithErrorCode(absl::NotFoundError(absl::StrCat("the model '", id, "' does not exist")),
                    "model_not_found"),
      &scope);
}

void ResourceRoutes::CreateSession(const httplib::Request& req, httplib::Response& res,
                                   RequestScope& scope) const {
  absl::StatusOr<SessionCreateRequest> parsed = ParseSessionCreateRequest(req.body);
  if (!parsed.ok()) return ReplyStatus(res, parsed.status(), &scope);
  if (absl::Status s = pool_->CheckModel(parsed->model); !s.ok()) {
    return ReplyStatus(res, s, &scope);
  }
  std::vector<size_t> tried;
  absl::Status last = absl::UnavailableError("no healthy backend can serve the request");
  while (true) {
    absl::StatusOr<BackendPool::Lease> lease = pool_->PickLeastLoaded(parsed->model, tried);
    if (!lease.ok()) return ReplyStatus(res, tried.empty() ? lease.status() : last, &scope);
    const size_t index = lease->index();
    tried.push_back(index);
    absl::StatusOr<v1::Session> session =
        pool_->Client(index, scope.api_key())->CreateSession(parsed->request);
    if (session.ok()) {
      pool_->LearnSession(index, session->session_id());
      return ReplyJson(res, 200, SessionJson(*session, parsed->model), &scope);
    }
    if (!absl::IsUnavailable(session.status())) return ReplyStatus(res, session.status(), &scope);
    pool_->ReportUnavailable(index);
    last = session.status();
  }
}

void ResourceRoutes::ListSessions(httplib::Response& res, RequestScope& scope) const {
  auto results = OnEveryBackend<std::vector<v1::Session>>(
      *pool_, scope.api_key(), [](FunnelClient& client) { return client.ListSessions(); });
  if (!results.ok()) return ReplyStatus(res, results.status(), &scope);
  Json data = Json::array();
  for (const auto& [index, sessions] : *results) {
    const std::string model = ModelOf(index);
    for (const v1::Session& s : sessions) data.push_back(SessionJson(s, model));
  }
  ReplyJson(res, 200, {{"object", "list"}, {"data", std::move(data)}}, &scope);
}

void ResourceRoutes::GetSession(const std::string& id, httplib::Response& res,
                                RequestScope& scope) const {
  absl::StatusOr<BackendPool::Lease> lease = pool_->PickForSession(id);
  if (!lease.ok()) return ReplyStatus(res, lease.status(), &scope);
  absl::StatusOr<v1::Session> session =
      pool_->Client(lease->index(), scope.api_key())->GetSession(id);
  if (!session.ok()) {
    if (absl::IsUnavailable(session.status())) pool_->ReportUnavailable(lease->index());
    return ReplyStatus(res, SessionError(session.status()), &scope);
  }
  ReplyJson(res, 200, SessionJson(*session, ModelOf(lease->index())), &scope);
}

void ResourceRoutes::DeleteSession(const std::string& id, httplib::Response& res,
                                   RequestScope& scope) const {
  absl::StatusOr<BackendPool::Lease> lease = pool_->PickForSession(id);
  if (!lease.ok()) return ReplyStatus(res, lease.status(), &scope);
  absl::Status s = pool_->Client(lease->index(), scope.api_key())->DeleteSession(id);
  if (!s.ok()) {
    if (absl::IsUnavailable(s)) pool_->ReportUnavailable(lease->index());
    return ReplyStatus(res, SessionError(s), &scope);
  }
  ReplyJson(res, 200, {{"id", id}, {"object", "session.deleted"}, {"deleted", true}}, &scope);
}

}  // namespace funnel
