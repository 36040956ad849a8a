// A server interceptor that answers requests gRPC could not deserialize (for example a proto3
// string field holding bytes that are not UTF-8) with INVALID_ARGUMENT instead of gRPC's
// INTERNAL (sync handlers) or UNIMPLEMENTED (callback handlers), so that bad client input is
// reported as such (DESIGN.md section 9).
//
// Install with ServerBuilder::experimental().SetInterceptorCreators().
#pragma once

#include "grpcpp/support/server_interceptor.h"

namespace funnel {

class UnparsableRequestInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace funnel
