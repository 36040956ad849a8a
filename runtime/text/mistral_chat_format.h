// Mistral's instruct formats, as mistral-common's InstructRequestNormalizer and
// InstructTokenizerV1/V2/V3/V7 (SentencePiece) produce them, rendered into a ChatTokenBuilder.
//
// Normalization: consecutive user messages are joined with "\n\n", consecutive assistant
// messages too (their tool calls collected; a message with tool calls contributes no content
// before v7); tool call arguments and tool message content are re-serialized as JSON when they
// parse (empty → "{}"). v1–v3: all system messages are joined with "\n\n" into one system
// prompt (v1: prepended to the first user message, v2/v3: to the last), and an empty user
// message is inserted when the conversation does not start with one. v7: system messages stay in
// place. Then BOS (added by the caller) and each message:
//   user       v1: ["[INST] " content " [/INST]"]; v2+: [AVAILABLE_TOOLS] [tools json]
//              [/AVAILABLE_TOOLS] (last user message only) [INST] [content] [/INST]
//   assistant  [content] EOS (v2+: content without trailing spaces); with tool calls
//              [TOOL_CALLS] [json list of {"name", "arguments"(, "id" from v3)}] EOS
//   tool       v2: [TOOL_RESULTS] [json [{"name", "content"}, ...]] [/TOOL_RESULTS] for each run
//              of consecutive tool messages;
//              v3: [TOOL_RESULTS] [json {"content", "call_id"}] [/TOOL_RESULTS];
//              v7: [TOOL_RESULTS] [call id] [TOOL_CONTENT] [content] [/TOOL_RESULTS]
//   system     v7: [SYSTEM_PROMPT] [content] [/SYSTEM_PROMPT]
// where [x] is x encoded on its own (space-prefix rule), and v2 leaves out tool calls and tool
// results that come before the last user message.
#pragma once

#include <span>
#include <string>

#include "absl/status/status.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/chat_token_builder.h"

namespace funnel {

enum class MistralVersion { kV1, kV2, kV3, kV7 };

// InvalidArgument for tools, tool calls or tool messages in v1, an assistant message with
// neither content nor tool calls, a tool message without a call id (v3/v7), or tools JSON that
// is not an array of objects.
absl::Status RenderMistral(MistralVersion version, std::span<const ChatMessage> messages,
                           const std::string& tools_json, ChatTokenBuilder& b);

}  // namespace funnel
