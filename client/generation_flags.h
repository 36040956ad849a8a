// The sampling and KV-compression flags shared by `funnel run` and the commands that talk to a
// server (generate, session, bench), read the same way everywhere.
#pragma once

#include "absl/status/statusor.h"
#include "client/cli_args.h"
#include "runtime/kv/kv_policy.h"
#include "runtime/sample/sampling_params.h"

namespace funnel {

// --max-tokens (default 128) --temperature (0: greedy) --top-p --top-k --min-p
// --repetition-penalty --presence-penalty --frequency-penalty --seed --stop... --ignore-eos
void AddSamplingFlags(CliSpec& spec);
absl::StatusOr<SamplingParams> ParseSamplingParams(const CliArgs& args);  // validated

// --kv-method (default full) --kv-budget --kv-ratio --kv-window --kv-pooling --kv-kernel
// --kv-rounding
void AddKvFlags(CliSpec& spec);
bool HasKvFlags(const CliArgs& args);
absl::StatusOr<KvPolicy> ParseKvPolicy(const CliArgs& args);  // validated

}  // namespace funnel
