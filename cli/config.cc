#include "cli/config.h"

#include <filesystem>
#include <toml++/toml.h>

#include "core/strings.h"

namespace tessera::cli {
namespace {

using core::StrCat;

absl::StatusOr<std::string> ValueString(const toml::node& node) {
  if (auto s = node.value<std::string>()) return *s;
  if (node.is_boolean()) return std::string(*node.value<bool>() ? "true" : "false");
  if (node.is_integer()) return std::to_string(*node.value<int64_t>());
  if (node.is_floating_point()) {
    std::ostringstream os;
    os.precision(17);
    os << *node.value<double>();
    return os.str();
  }
  return absl::InvalidArgumentError("only strings, numbers and booleans are allowed");
}

bool IsSubcommandName(const std::string& key) {
  return key == "simulate" || key == "coordinator" || key == "client";
}

// `prefix` names the settings table a key sits in: [secure_aggregation] neighbours = 8 sets
// --secure-aggregation-neighbours, and enabled = true sets --secure-aggregation. The [strategy]
// table is the exception: name = "fedadam" sets --strategy, and its other keys are the flags'
// own names (server_lr = 0.1 sets --server-lr).
std::string TableKey(const std::string& prefix, const std::string& key) {
  if (prefix == "strategy") return key == "name" ? prefix : key;
  return key == "enabled" ? prefix : prefix + "_" + key;
}

absl::Status ApplyTable(const std::string& path, const toml::table& table, CLI::App* sub, bool top_level,
                        const std::string& prefix = "") {
  for (const auto& [key_node, value] : table) {
    std::string key(key_node.str());
    if (value.is_table()) {
      if (top_level && IsSubcommandName(key)) continue;  // its own table went first; others are ignored
      if (!prefix.empty()) {
        return absl::InvalidArgumentError(StrCat(path, ": table '", key, "' is nested too deep"));
      }
      absl::Status s = ApplyTable(path, *value.as_table(), sub, false, key);
      if (!s.ok()) return s;
      continue;
    }
    if (!prefix.empty()) key = TableKey(prefix, key);
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (flag == "config") return absl::InvalidArgumentError(StrCat(path, ": a config file cannot name another"));
    CLI::Option* opt = sub->get_option_no_throw("--" + flag);
    if (opt == nullptr) {
      return absl::InvalidArgumentError(StrCat(path, ": unknown setting '", key, "' for 'tessera ", sub->get_name(), "'"));
    }
    if (opt->count() > 0) continue;  // the command line wins
    auto text = ValueString(value);
    if (!text.ok()) return absl::InvalidArgumentError(StrCat(path, ": '", key, "': ", text.status().message()));
    try {
      opt->add_result(*text);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      return absl::InvalidArgumentError(StrCat(path, ": '", key, "' = ", *text, ": ", e.what()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyTomlConfig(const std::string& path, CLI::App* subcommand) {
  if (!std::filesystem::exists(path)) return absl::NotFoundError(StrCat("config file ", path, " does not exist"));
  if (!std::filesystem::is_regular_file(path)) {
    return absl::InvalidArgumentError(StrCat("config file ", path, " is not a regular file"));
  }
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return absl::InvalidArgumentError(StrCat(path, ":", where.line, ":", where.column, ": ", e.description()));
  }
  // The subcommand's own table first, so that its settings win over top-level ones (the first
  // value applied to a flag wins; the command line's count as applied already).
  if (const toml::table* own = table[subcommand->get_name()].as_table()) {
    if (absl::Status s = ApplyTable(path, *own, subcommand, false); !s.ok()) return s;
  }
  return ApplyTable(path, table, subcommand, true);
}

}  // namespace tessera::cli
