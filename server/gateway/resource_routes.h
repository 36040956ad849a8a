// The unary routes: GET /v1/models, GET /v1/models/{id}, and the session resource
// (POST /v1/sessions, GET /v1/sessions, GET /v1/sessions/{id}, DELETE /v1/sessions/{id}).
//
// Models and session lists are gathered from every healthy backend with the caller's key (the
// union, by id). A session is created on the least-loaded backend serving its model (retried
// elsewhere on UNAVAILABLE) and addressed afterwards through its owning replica.
//
// Thread rules: the handlers run on any HTTP worker thread; the routes are immutable.
#pragma once

#include <string>

#include "httplib.h"
#include "server/gateway/backend_pool.h"
#include "server/gateway/request_scope.h"

namespace funnel {

class ResourceRoutes {
 public:
  explicit ResourceRoutes(BackendPool* pool) : pool_(pool) {}

  void ListModels(httplib::Response& res, RequestScope& scope) const;
  void GetModel(const std::string& id, httplib::Response& res, RequestScope& scope) const;
  void CreateSession(const httplib::Request& req, httplib::Response& res,
                     RequestScope& scope) const;
  void ListSessions(httplib::Response& res, RequestScope& scope) const;
  void GetSession(const std::string& id, httplib::Response& res, RequestScope& scope) const;
  void DeleteSession(const std::string& id, httplib::Response& res, RequestScope& scope) const;

 private:
  // The model id every backend reported (by index; "" when not known).
  std::string ModelOf(size_t index) const;

  BackendPool* pool_;
};

}  // namespace funnel
