#include "runtime/text/python_json.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace funnel {
namespace {

using OrderedJson = nlohmann::ordered_json;

void Dump(const OrderedJson& v, std::string& out) {
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [key, item] : v.items()) {
      if (!first) out += ", ";
      first = false;
      out += OrderedJson(key).dump();
      out += ": ";
      Dump(item, out);
    }
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ", ";
      Dump(v[i], out);
    }
    out += ']';
  } else {
    out += v.dump();  // scalars: same escaping as json.dumps(ensure_ascii=False)
  }
}

}  // namespace

absl::StatusOr<std::string> PythonJsonDumps(const OrderedJson& value) {
  std::string out;
  try {
    Dump(value, out);
  } catch (const OrderedJson::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("JSON: ", e.what()));
  }
  return out;
}

OrderedJson ParseJsonOrString(std::string_view text) {
  try {
    return OrderedJson::parse(text.begin(), text.end());
  } catch (const OrderedJson::exception&) {
    return OrderedJson(std::string(text));
  }
}

}  // namespace funnel
