// The only mapping between absl::Status (everything below the RPC layer) and grpc::Status.
// The canonical codes share their numbering, so the code passes through unchanged; messages are
// kept as they are.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace funnel {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// What a request that gRPC could not parse into its message (proto3 strings that are not UTF-8,
// truncated or mistyped fields) is answered with, instead of gRPC's INTERNAL.
grpc::Status UnparsableRequestStatus();

}  // namespace funnel
