#include "proto/kv_method_conversion.h"

namespace funnel {

v1::KvMethod KvMethodToProto(KvMethod method) {
  switch (method) {
    case KvMethod::kFull:
      return v1::KV_METHOD_FULL;
    case KvMethod::kPyramidKv:
      return v1::KV_METHOD_PYRAMIDKV;
    case KvMethod::kSnapKv:
      return v1::KV_METHOD_SNAPKV;
    case KvMethod::kStreamingLlm:
      return v1::KV_METHOD_STREAMINGLLM;
    case KvMethod::kH2o:
      return v1::KV_METHOD_H2O;
  }
  return v1::KV_METHOD_UNSPECIFIED;
}

std::optional<KvMethod> KvMethodFromProto(v1::KvMethod method) {
  switch (method) {
    case v1::KV_METHOD_FULL:
      return KvMethod::kFull;
    case v1::KV_METHOD_PYRAMIDKV:
      return KvMethod::kPyramidKv;
    case v1::KV_METHOD_SNAPKV:
      return KvMethod::kSnapKv;
    case v1::KV_METHOD_STREAMINGLLM:
      return KvMethod::kStreamingLlm;
    case v1::KV_METHOD_H2O:
      return KvMethod::kH2o;
    default:
      return std::nullopt;
  }
}

}  // namespace funnel
