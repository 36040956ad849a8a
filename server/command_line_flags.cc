#include "server/command_line_flags.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace funnel {

absl::Status CommandLineFlags::Parse(const std::vector<std::string>& args, bool& help) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      continue;
    }
    if (arg.size() < 3 || arg.compare(0, 2, "--") != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    }
    std::string name = arg.substr(2);
    std::string value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      if (switches_.count(name) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
    } else if (known_.count(name) != 0 && switches_.count(name) == 0) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (known_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    std::vector<std::string>& values = values_[name];
    if (!values.empty() && repeatable_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    }
    values.push_back(std::move(value));
  }
  return absl::OkStatus();
}

std::optional<std::string> CommandLineFlags::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.front();
}

const std::vector<std::string>& CommandLineFlags::All(const std::string& name) const {
  static const auto* none = new std::vector<std::string>();
  auto it = values_.find(name);
  return it == values_.end() ? *none : it->second;
}

absl::StatusOr<int64_t> CommandLineFlags::GetInt(const std::string& name, int64_t def, int64_t lo,
                                                 int64_t hi) const {
  std::optional<std::string> v = Get(name);
  if (!v) return def;
  int64_t x = 0;
  if (!absl::SimpleAtoi(*v, &x)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", *v, "' is not an integer"));
  }
  if (x < lo || x > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", x));
  }
  return x;
}

absl::StatusOr<double> CommandLineFlags::GetDouble(const std::string& name, double def, double lo,
                                                   double hi) const {
  std::optional<std::string> v = Get(name);
  if (!v) return def;
  double x = 0;
  if (!absl::SimpleAtod(*v, &x) || !std::isfinite(x)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", *v, "' is not a number"));
  }
  if (x < lo || x > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be in [", lo, ", ", hi, "], got ", *v));
  }
  return x;
}

}  // namespace funnel
