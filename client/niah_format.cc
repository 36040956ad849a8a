#include "client/niah_format.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"

namespace funnel {
namespace {

std::string DistinctDigits(std::mt19937_64& rng, int n) {
  std::string digits = "0123456789";
  std::string out(1, "123456789"[rng() % 9]);
  digits.erase(digits.find(out[0]), 1);
  std::shuffle(digits.begin(), digits.end(), rng);
  out += digits.substr(0, static_cast<size_t>(n - 1));
  return out;
}

const std::string& Pick(const std::vector<std::string>& v, std::mt19937_64& rng) {
  return v[rng() % v.size()];
}

std::string Fill(const std::string& tmpl, const std::string& key, const std::string& value) {
  return absl::StrReplaceAll(tmpl, {{"{key}", key}, {"{value}", value}});
}

std::vector<std::string> Strings(const nlohmann::json& j, const char* name) {
  std::vector<std::string> out;
  if (j.contains(name) && j[name].is_array()) {
    for (const auto& s : j[name]) {
      if (s.is_string()) out.push_back(s.get<std::string>());
    }
  }
  return out;
}

}  // namespace

NiahFormat ReferenceNiahFormat(NiahFact fact) {
  NiahFormat f;
  fact.kind = "fixed";
  f.fixed = std::move(fact);
  return f;
}

absl::StatusOr<NiahFormat> LoadFixtureNiahFormat(const std::string& path, const std::string& kind) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read --format ", path));
  NiahFormat f;
  f.prompt_template = "{context}{question}";
  f.buffer_tokens = -1;
  f.collapse_whitespace = true;
  f.fixture = true;
  f.haystack_skip_files = 40;
  f.kind = kind;
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    f.stop = j.value("stop", std::string("."));
    f.max_new_tokens = j.value("max_new_tokens", 48);
    if (kind == "classic") {
      const nlohmann::json& c = j.at("classic_needle");
      f.fixed = {"classic", c.at("needle").get<std::string>(), c.at("question").get<std::string>(),
                 c.at("answer").get<std::string>()};
      return f;
    }
    const nlohmann::json& t = j.at("templates").at(kind);
    f.needle_template = t.at("needle").get<std::string>();
    f.question_template = t.at("question").get<std::string>();
    f.answer_template = t.at("answer").get<std::string>();
    const nlohmann::json& values = j.at("values");
    f.kv_keys = Strings(values, "kv_keys");
    f.cities = Strings(values, "cities");
    f.activities = Strings(values, "activities");
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("--format ", path, ": ", e.what()));
  }
  if (kind != "passkey" && kind != "kv" && kind != "city") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown needle kind '", kind, "' (passkey, kv, city or classic)"));
  }
  if ((kind == "kv" && f.kv_keys.empty()) ||
      (kind == "city" && (f.cities.empty() || f.activities.empty()))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--format ", path, " lists no values for ", kind));
  }
  return f;
}

NiahFact DrawNiahFact(const NiahFormat& f, std::mt19937_64& rng) {
  if (f.kind == "fixed" || f.kind == "classic") return f.fixed;
  std::string key, value;
  if (f.kind == "passkey") {
    value = DistinctDigits(rng, 5);
  } else if (f.kind == "kv") {
    key = Pick(f.kv_keys, rng);
    value = DistinctDigits(rng, (rng() & 1) ? 5 : 4);
  } else {
    key = Pick(f.cities, rng);
    value = Pick(f.activities, rng);
  }
  return {f.kind, Fill(f.needle_template, key, value), Fill(f.question_template, key, value),
          Fill(f.answer_template, key, value)};
}

std::string RenderNiahPrompt(const NiahFormat& format, const std::string& context,
                             const std::string& question) {
  // One pass, so braces inside the context are never read as fields.
  std::string out;
  const std::string& t = format.prompt_template;
  size_t i = 0;
  while (i < t.size()) {
    if (t.compare(i, 9, "{context}") == 0) {
      out += context;
      i += 9;
    } else if (t.compare(i, 10, "{question}") == 0) {
      out += question;
      i += 10;
    } else {
      out.push_back(t[i++]);
    }
  }
  return out;
}

}  // namespace funnel
