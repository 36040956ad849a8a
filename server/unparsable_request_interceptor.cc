#include "server/unparsable_request_interceptor.h"

#include "server/status_conversion.h"

namespace funnel {
namespace {

// One per call: remembers whether the request message failed to deserialize, then rewrites the
// status gRPC sends for that (INTERNAL from a sync handler, UNIMPLEMENTED from a callback one).
class UnparsableRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsable_ = true;
    }
    if (unparsable_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS) &&
        !methods->GetSendStatus().ok()) {
      methods->ModifySendStatus(UnparsableRequestStatus());
    }
    methods->Proceed();
  }

 private:
  bool unparsable_ = false;
};

}  // namespace

grpc::experimental::Interceptor* UnparsableRequestInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo*) {
  return new UnparsableRequestInterceptor();
}

}  // namespace funnel
