// TOML configuration for the `tessera` subcommands. A config file sets any flag by its long
// name (`local_epochs = 5` or `local-epochs = 5`), at the top level or in a table named after
// the subcommand (`[simulate]`); flags given on the command line win.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tessera::cli {

// INVALID_ARGUMENT (one line, naming file, key and reason) for a file that does not parse, an
// unknown key, or a value the flag refuses; NOT_FOUND for a missing file.
absl::Status ApplyTomlConfig(const std::string& path, CLI::App* subcommand);

}  // namespace tessera::cli
