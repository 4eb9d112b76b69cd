// Internal to client/torch/: the libtorch helpers that torch_trainer.cc and torch_export.cc
// share. Includes libtorch, so nothing outside client/torch/ may include it.
#pragma once

#include <torch/script.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/strings.h"
#include "core/tensor.h"

namespace tessera::client::torch::internal {

// A model's state: named parameters, then named buffers ("fc1.weight", ...). The tensors alias
// the model's storage.
using NamedState = std::vector<std::pair<std::string, ::torch::Tensor>>;

// libtorch messages can span many lines (TorchScript adds a traceback, whose last line holds
// the cause): keeps the first line and, when different, the last non-empty one.
std::string Summarize(std::string_view s);

// Runs `f` (returning absl::Status or absl::StatusOr<T>); a libtorch exception becomes `code`
// with `what` and a summary of the exception as the message.
template <typename F>
auto RunGuarded(absl::StatusCode code, std::string_view what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error& e) {
    return absl::Status(code, core::StrCat(what, ": ", Summarize(e.what_without_backtrace())));
  } catch (const std::exception& e) {
    return absl::Status(code, core::StrCat(what, ": ", Summarize(e.what())));
  }
}

// The state of a TorchScript module, parameters then buffers, recursively named.
NamedState ScriptState(const ::torch::jit::Module& module);

// Loads a TorchScript file on the CPU. NOT_FOUND for a missing file, INVALID_ARGUMENT for
// anything that is not a loadable regular file.
absl::StatusOr<::torch::jit::Module> LoadScriptModule(const std::string& path);

// ModelWeights::CheckSameLayout's checks and messages, against a live state. May throw.
absl::Status CheckLayout(const core::ModelWeights& weights, const NamedState& state);

// Copies `weights` into `state` in place after CheckLayout. May throw (run it guarded).
absl::Status LoadWeights(const core::ModelWeights& weights, const NamedState& state);

}  // namespace tessera::client::torch::internal
