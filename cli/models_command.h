// `tessera models`: the global model versions a run wrote, and their export.
//   tessera models list   --from DIR
//   tessera models show   --from DIR [--version N]
//   tessera models export --from DIR [--version N] --format torchscript|safetensors --out PATH
//
// DIR is a coordinator's or simulation's --output directory or its models/ subdirectory. Each
// version's round, parent, contributing clients, metrics and time come from DIR/state.db when it
// is there (opened read-only: a running coordinator is not disturbed), else from the metadata of
// the safetensors files. The model files do not record the architecture or the data: they are
// inferred from the tensor names and shapes (zoo models) unless --model / --input-shape /
// --num-classes / --dataset say otherwise (a TorchScript architecture must be given by --model).
//
// `show` prints the model card (core/model_card.h) of a version (default: the latest); `export`
// writes PATH and PATH.card.json. Exit 2 for bad usage (flags), 1 for bad input (a missing
// directory, an unknown version, a damaged file or database), each with one line on stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::cli {

struct ModelsArgs {
  std::string from;
  int64_t version = -1;               // -1: the latest
  std::string format = "torchscript";
  std::string out;
  std::string model;                  // "" : from the weights
  std::vector<int64_t> input_shape;   // empty: inferred
  int num_classes = 0;                // 0: inferred (10 for a TorchScript architecture)
  std::string dataset = "auto";       // auto | fashion-mnist | none
};

void AddModels(CLI::App& app, ModelsArgs* args);
// Runs the parsed `models` subcommand `sub`; returns the process's exit code.
int RunModels(CLI::App* sub, ModelsArgs& args);

}  // namespace tessera::cli
