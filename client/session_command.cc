// funnel session create|get|list|delete: compressed-cache sessions on a funnel-server.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli_args.h"
#include "client/commands.h"
#include "client/funnel_client.h"
#include "client/remote_args.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

constexpr char kUsage[] =
    "usage: funnel session <create|get|list|delete> --server HOST:PORT [options]\n"
    "  create (--prompt TEXT | --prompt-ids ID,ID,...) [--ttl SECONDS] [--json]\n"
    "         [--kv-method M] [--kv-budget B | --kv-ratio R] [--kv-window W] [--kv-pooling P]\n"
    "         [--kv-kernel K] [--kv-rounding exact|official]\n"
    "         prints the session id, or with --json\n"
    "         {\"session_id\",\"tokens\",\"per_layer_tokens\",\"kv_bytes\"}\n"
    "  get --id ID      prints the session as JSON (with its policy, times, active requests)\n"
    "  list [--json]    one line per session, or {\"sessions\":[...]} with --json\n"
    "  delete --id ID   deletes the session (NOT_FOUND when unknown)\n"
    "every subcommand takes [--api-key KEY | --api-key-file FILE] [--timeout SECONDS]\n"
    "  [--tls | --tls-ca PEM] [--tls-cert PEM --tls-key PEM] [--tls-server-name NAME]\n";

absl::StatusOr<CliArgs> ParseWith(const std::vector<std::string>& argv, CliSpec spec) {
  AddConnectionFlags(spec);
  return CliArgs::Parse(argv, spec);
}

// Parsing errors are usage errors (exit 2); server errors carry their code name.
int Fail(const absl::Status& status, bool remote) {
  return ReportError("session", remote ? WithCodeName(status) : status);
}

int Create(const std::vector<std::string>& argv) {
  CliSpec spec{{"prompt", "prompt-ids", "ttl"}, {"json"}, {}};
  AddKvFlags(spec);
  absl::StatusOr<CliArgs> args = ParseWith(argv, spec);
  if (!args.ok()) return Fail(args.status(), false);
  absl::StatusOr<ClientOptions> options = ParseConnectionFlags(*args);
  if (!options.ok()) return Fail(options.status(), false);
  if (args->Has("prompt") == args->Has("prompt-ids")) {
    return Fail(absl::InvalidArgumentError("give exactly one of --prompt and --prompt-ids"), false);
  }
  v1::CreateSessionRequest request;
  if (auto prompt = args->Get("prompt")) request.set_prompt(*prompt);
  if (auto ids = args->Get("prompt-ids")) {
    absl::StatusOr<std::vector<int32_t>> parsed = ParseIdList(*ids, "prompt-ids");
    if (!parsed.ok()) return Fail(parsed.status(), false);
    request.mutable_prompt_ids()->mutable_ids()->Assign(parsed->begin(), parsed->end());
  }
  absl::StatusOr<int64_t> ttl = args->GetInt("ttl", 0, 1, int64_t{1} << 40);
  if (!ttl.ok()) return Fail(ttl.status(), false);
  request.set_ttl_seconds(*ttl);
  absl::StatusOr<std::optional<v1::KvPolicy>> kv = ParseKvFlags(*args);
  if (!kv.ok()) return Fail(kv.status(), false);
  if (*kv) *request.mutable_kv_policy() = **kv;

  absl::StatusOr<std::unique_ptr<FunnelClient>> client = FunnelClient::Create(*options);
  if (!client.ok()) return Fail(client.status(), false);
  absl::StatusOr<v1::Session> session = (*client)->CreateSession(request);
  if (!session.ok()) return Fail(session.status(), true);
  if (args->Flag("json")) {
    PrintJson(SessionJson(*session, /*detail=*/false));
  } else {
    std::printf("%s\n", session->session_id().c_str());
  }
  return 0;
}

int GetOrDelete(const std::vector<std::string>& argv, bool get) {
  absl::StatusOr<CliArgs> args = ParseWith(argv, CliSpec{{"id"}, {"json"}, {}});
  if (!args.ok()) return Fail(args.status(), false);
  absl::StatusOr<ClientOptions> options = ParseConnectionFlags(*args);
  if (!options.ok()) return Fail(options.status(), false);
  absl::StatusOr<std::string> id = args->Require("id");
  if (!id.ok()) return Fail(id.status(), false);
  absl::StatusOr<std::unique_ptr<FunnelClient>> client = FunnelClient::Create(*options);
  if (!client.ok()) return Fail(client.status(), false);
  if (get) {
    absl::StatusOr<v1::Session> session = (*client)->GetSession(*id);
    if (!session.ok()) return Fail(session.status(), true);
    PrintJson(SessionJson(*session, /*detail=*/true));
    return 0;
  }
  if (absl::Status st = (*client)->DeleteSession(*id); !st.ok()) return Fail(st, true);
  return 0;
}

int List(const std::vector<std::string>& argv) {
  absl::StatusOr<CliArgs> args = ParseWith(argv, CliSpec{{}, {"json"}, {}});
  if (!args.ok()) return Fail(args.status(), false);
  absl::StatusOr<ClientOptions> options = ParseConnectionFlags(*args);
  if (!options.ok()) return Fail(options.status(), false);
  absl::StatusOr<std::unique_ptr<FunnelClient>> client = FunnelClient::Create(*options);
  if (!client.ok()) return Fail(client.status(), false);
  absl::StatusOr<std::vector<v1::Session>> sessions = (*client)->ListSessions();
  if (!sessions.ok()) return Fail(sessions.status(), true);
  if (args->Flag("json")) {
    nlohmann::json list = nlohmann::json::array();
    for (const v1::Session& s : *sessions) list.push_back(SessionJson(s, /*detail=*/true));
    PrintJson({{"sessions", list}});
    return 0;
  }
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (const v1::Session& s : *sessions) {
    std::string expires = "never";
    if (s.expires_unix_ms() > 0) {
      expires = absl::StrCat((s.expires_unix_ms() - now_ms + 999) / 1000, "s");
    }
    std::printf("%s tokens=%lld kv_bytes=%lld active=%d expires_in=%s\n", s.session_id().c_str(),
                static_cast<long long>(s.tokens()), static_cast<long long>(s.kv_bytes()),
                s.active_requests(), expires.c_str());
  }
  return 0;
}

}  // namespace

int SessionCommand(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  for (const auto& a : args) {
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
  }
  const std::string& sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "create") return Create(rest);
  if (sub == "get") return GetOrDelete(rest, /*get=*/true);
  if (sub == "delete") return GetOrDelete(rest, /*get=*/false);
  if (sub == "list") return List(rest);
  std::fprintf(stderr, "funnel session: unknown subcommand '%s'\n%s", sub.c_str(), kUsage);
  return 2;
}

}  // namespace funnel
