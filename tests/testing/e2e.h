// Shared pieces of the process-level tests (tests/e2e/): where the binary and the data are, a
// fresh temporary directory, reading a child's log, waiting (bounded) for a coordinator's port.
#pragma once

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "core/file_io.h"
#include "tests/testing/subprocess.h"

namespace tessera::testing {

inline const std::string kTessera = std::string(TESSERA_BINARY_DIR) + "/cli/tessera";
inline const std::string kFashionMnist = "/usr/share/datasets/fashion-mnist";

// An empty directory of its own under the system's temp directory.
inline std::filesystem::path MakeTempDir(const std::string& name) {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tessera_e2e_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A file's text ("" when it cannot be read): for logs in failure messages.
inline std::string ReadLog(const std::filesystem::path& p) {
  auto s = core::ReadFile(p.string());
  return s.ok() ? *s : "";
}

// Waits (at most 30 s) for the coordinator to write the port it bound; -1 if it exited first
// or never wrote it.
inline int WaitForPort(const std::filesystem::path& port_file, Subprocess& coordinator) {
  for (int i = 0; i < 600; ++i) {
    auto text = core::ReadFile(port_file.string());
    if (text.ok() && !text->empty()) return std::stoi(*text);
    if (coordinator.Wait(std::chrono::milliseconds(50))) return -1;
  }
  return -1;
}

// Waits (at most `timeout`) for `text` to appear in the log at `path`; false if `process` exited
// first or the time ran out.
inline bool WaitForLogText(const std::filesystem::path& path, const std::string& text, Subprocess& process,
                           std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (ReadLog(path).find(text) != std::string::npos) return true;
    if (process.Wait(std::chrono::milliseconds(20))) return ReadLog(path).find(text) != std::string::npos;
  }
  return false;
}

}  // namespace tessera::testing
