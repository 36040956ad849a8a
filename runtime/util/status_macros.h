// RETURN_IF_ERROR / ASSIGN_OR_RETURN for absl::Status and absl::StatusOr (absl 20220623 lacks them).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FUNNEL_STATUS_CONCAT_INNER(a, b) a##b
#define FUNNEL_STATUS_CONCAT(a, b) FUNNEL_STATUS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                           \
  do {                                                  \
    if (absl::Status _st = (expr); !_st.ok()) return _st; \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(*tmp)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(FUNNEL_STATUS_CONCAT(_status_or_, __LINE__), lhs, expr)
