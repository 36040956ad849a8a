#include "runtime/text/mistral_chat_format.h"

#include <algorithm>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/text/python_json.h"
#include "runtime/util/status_macros.h"

namespace funnel {
namespace {

using OrderedJson = nlohmann::ordered_json;

// mistral-common's _normalize_json_content.
absl::StatusOr<std::string> NormalizeJson(const std::string& content) {
  if (content.empty()) return std::string("{}");
  OrderedJson parsed = ParseJsonOrString(content);
  if (parsed.is_string() && parsed.get<std::string>() == content) return content;
  return PythonJsonDumps(parsed);
}

// Consecutive same-role messages merged, system messages handled per version.
absl::StatusOr<std::vector<ChatMessage>> Normalize(MistralVersion v,
                                                   std::span<const ChatMessage> messages) {
  std::vector<ChatMessage> out;
  for (const ChatMessage& m : messages) {
    if (m.role == "system" && v != MistralVersion::kV7) continue;
    const bool same_role = !out.empty() && out.back().role == m.role;
    if (m.role == "user" && same_role) {
      if (!m.content.empty()) {
        out.back().content = out.back().content.empty()
                                 ? m.content
                                 : absl::StrCat(out.back().content, "\n\n", m.content);
      }
      continue;
    }
    if (m.role == "assistant" && same_role) {
      ChatMessage& prev = out.back();
      prev.tool_calls.insert(prev.tool_calls.end(), m.tool_calls.begin(), m.tool_calls.end());
      if ((m.tool_calls.empty() || v == MistralVersion::kV7) && !m.content.empty()) {
        prev.content =
            prev.content.empty() ? m.content : absl::StrCat(prev.content, "\n\n", m.content);
      }
      continue;
    }
    ChatMessage copy = m;
    if (m.role == "assistant" && !m.tool_calls.empty() && v != MistralVersion::kV7) {
      copy.content.clear();
    }
    if (m.role == "tool") {
      ASSIGN_OR_RETURN(copy.content, NormalizeJson(m.content));
    }
    for (ChatToolCall& call : copy.tool_calls) {
      ASSIGN_OR_RETURN(call.arguments, NormalizeJson(call.arguments));
    }
    out.push_back(std::move(copy));
  }
  const bool needs_user =
      v == MistralVersion::kV7 ? out.empty() : (out.empty() || out[0].role != "user");
  if (needs_user) out.insert(out.begin(), ChatMessage("user", ""));
  return out;
}

std::string SystemPrompt(std::span<const ChatMessage> messages) {
  std::vector<std::string> parts;
  for (const ChatMessage& m : messages) {
    if (m.role == "system" && !m.content.empty()) parts.push_back(m.content);
  }
  return absl::StrJoin(parts, "\n\n");
}

// The tools as mistral-common dumps Tool.model_dump(): type, then function {name, description,
// parameters}.
absl::StatusOr<std::string> ToolsJson(const std::string& tools_json) {
  const OrderedJson tools = ParseJsonOrString(tools_json);
  if (!tools.is_array()) return absl::InvalidArgumentError("tools: not a JSON array");
  OrderedJson out = OrderedJson::array();
  for (const OrderedJson& t : tools) {
    if (!t.is_object() || !t.contains("function") || !t.at("function").is_object()) {
      return absl::InvalidArgumentError("tools: each tool needs a \"function\" object");
    }
    const OrderedJson& f = t.at("function");
    OrderedJson fn = OrderedJson::object();
    fn["name"] = f.value("name", std::string());
    fn["description"] = f.value("description", std::string());
    fn["parameters"] = f.contains("parameters") ? f.at("parameters") : OrderedJson::object();
    OrderedJson tool = OrderedJson::object();
    tool["type"] = t.value("type", std::string("function"));
    tool["function"] = std::move(fn);
    out.push_back(std::move(tool));
  }
  return PythonJsonDumps(out);
}

absl::StatusOr<std::string> ToolCallsJson(MistralVersion v, const ChatMessage& m) {
  OrderedJson calls = OrderedJson::array();
  for (const ChatToolCall& c : m.tool_calls) {
    OrderedJson call = OrderedJson::object();
    call["name"] = c.name;
    call["arguments"] = ParseJsonOrString(c.arguments);
    if (v != MistralVersion::kV2 && !c.id.empty() && c.id != "null") call["id"] = c.id;
    calls.push_back(std::move(call));
  }
  return PythonJsonDumps(calls);
}

class MistralRenderer {
 public:
  MistralRenderer(MistralVersion v, ChatTokenBuilder& b) : v_(v), b_(b) {}

  absl::Status Render(std::span<const ChatMessage> original, const std::string& tools_json) {
    if (v_ == MistralVersion::kV1 && !tools_json.empty()) {
      return absl::InvalidArgumentError("tools are not supported by the mistral-v1 format");
    }
    if (!tools_json.empty()) {
      ASSIGN_OR_RETURN(tools_, ToolsJson(tools_json));
    }
    system_ = v_ == MistralVersion::kV7 ? "" : SystemPrompt(original);
    ASSIGN_OR_RETURN(std::vector<ChatMessage> messages, Normalize(v_, original));
    size_t first_user = messages.size(), last_user = 0;
    for (size_t i = 0; i < messages.size(); ++i) {
      if (messages[i].role != "user") continue;
      first_user = std::min(first_user, i);
      last_user = i;
    }
    if (v_ == MistralVersion::kV1) {
      for (const ChatMessage& m : messages) {
        if (m.role == "tool") {
          return absl::InvalidArgumentError(
              "tool messages are not supported by the mistral-v1 format");
        }
      }
    }
    for (size_t i = 0; i < messages.size(); ++i) {
      const ChatMessage& m = messages[i];
      const bool before_last_user = i < last_user;
      if (m.role == "user") {
        User(m, i == first_user, i == last_user);
      } else if (m.role == "assistant") {
        RETURN_IF_ERROR(Assistant(m, before_last_user));
      } else if (m.role == "tool" && v_ == MistralVersion::kV2) {
        // v2 answers a run of tool messages with one list of results.
        size_t end = i;
        while (end + 1 < messages.size() && messages[end + 1].role == "tool") ++end;
        if (!before_last_user) {
          RETURN_IF_ERROR(
              ToolResultsV2(std::span<const ChatMessage>(messages).subspan(i, end - i + 1)));
        }
        i = end;
      } else if (m.role == "tool") {
        RETURN_IF_ERROR(Tool(m));
      } else {
        b_.Marker("[SYSTEM_PROMPT]");
        b_.Segment(m.content);
        b_.Marker("[/SYSTEM_PROMPT]");
      }
    }
    return absl::OkStatus();
  }

 private:
  void User(const ChatMessage& m, bool first, bool last) {
    const bool with_system = !system_.empty() && (v_ == MistralVersion::kV1 ? first : last);
    const std::string content = with_system ? absl::StrCat(system_, "\n\n", m.content) : m.content;
    if (v_ == MistralVersion::kV1) {
      b_.Segment(absl::StrCat("[INST] ", content, " [/INST]"));
      return;
    }
    if (last && !tools_.empty()) {
      b_.Marker("[AVAILABLE_TOOLS]");
      b_.Segment(tools_);
      b_.Marker("[/AVAILABLE_TOOLS]");
    }
    b_.Marker("[INST]");
    b_.Segment(content);
    b_.Marker("[/INST]");
  }

  absl::Status Assistant(const ChatMessage& m, bool before_last_user) {
    if (m.content.empty() && m.tool_calls.empty()) {
      return absl::InvalidArgumentError("an assistant message needs content or tool calls");
    }
    if (!m.tool_calls.empty() && v_ == MistralVersion::kV1) {
      return absl::InvalidArgumentError("tool calls are not supported by the mistral-v1 format");
    }
    if (!m.tool_calls.empty() && before_last_user && v_ == MistralVersion::kV2) {
      return absl::OkStatus();  // v2 drops tool calls before the last user message
    }
    if (!m.content.empty()) {
      std::string_view content = m.content;
      if (v_ != MistralVersion::kV1) {
        while (!content.empty() && content.back() == ' ') content.remove_suffix(1);
      }
      b_.Segment(content);
    }
    if (!m.tool_calls.empty()) {
      ASSIGN_OR_RETURN(std::string calls, ToolCallsJson(v_, m));
      b_.Marker("[TOOL_CALLS]");
      b_.Segment(calls);
    }
    b_.Eos();
    return absl::OkStatus();
  }

  // v3 / v7: one tool message.
  absl::Status Tool(const ChatMessage& m) {
    if (m.tool_call_id.empty()) {
      return absl::InvalidArgumentError("a tool message needs a tool_call_id");
    }
    b_.Marker("[TOOL_RESULTS]");
    if (v_ == MistralVersion::kV7) {
      b_.Segment(m.tool_call_id);
      b_.Marker("[TOOL_CONTENT]");
      b_.Segment(m.content);
    } else {
      OrderedJson result = OrderedJson::object();
      result["content"] = ParseJsonOrString(m.content);
      result["call_id"] = m.tool_call_id;
      ASSIGN_OR_RETURN(std::string json, PythonJsonDumps(result));
      b_.Segment(json);
    }
    b_.Marker("[/TOOL_RESULTS]");
    return absl::OkStatus();
  }

  // v2: consecutive tool messages as one list of {"name", "content"}.
  absl::Status ToolResultsV2(std::span<const ChatMessage> results) {
    OrderedJson list = OrderedJson::array();
    for (const ChatMessage& m : results) {
      OrderedJson result = OrderedJson::object();
      result["name"] = m.name;
      result["content"] = ParseJsonOrString(m.content);
      list.push_back(std::move(result));
    }
    ASSIGN_OR_RETURN(std::string json, PythonJsonDumps(list));
    b_.Marker("[TOOL_RESULTS]");
    b_.Segment(json);
    b_.Marker("[/TOOL_RESULTS]");
    return absl::OkStatus();
  }

  MistralVersion v_;
  ChatTokenBuilder& b_;
  std::string system_;
  std::string tools_;
};

}  // namespace

absl::Status RenderMistral(MistralVersion version, std::span<const ChatMessage> messages,
                           const std::string& tools_json, ChatTokenBuilder& b) {
  return MistralRenderer(version, b).Render(messages, tools_json);
}

}  // namespace funnel
