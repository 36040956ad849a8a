// KvMethod <-> funnel.v1.KvMethod, the one mapping shared by the server and the client.
#pragma once

#include <optional>

#include "funnel/v1/inference.pb.h"
#include "runtime/kv/kv_policy.h"

namespace funnel {

v1::KvMethod KvMethodToProto(KvMethod method);
// nullopt for KV_METHOD_UNSPECIFIED and unknown values.
std::optional<KvMethod> KvMethodFromProto(v1::KvMethod method);

}  // namespace funnel
