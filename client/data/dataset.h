// In-memory labelled datasets and cheap per-client views of them.
//
// A federation's clients share one loaded Dataset (read-only, shared_ptr) and each holds only a
// DatasetView: the indices of its examples. This keeps a simulation of many clients at one copy
// of the data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tessera::client {

// How raw features were turned into model inputs; recorded so exported models describe it.
struct Preprocessing {
  double scale = 1.0;  // x' = (x * scale - mean) / stddev
  double mean = 0.0;
  double stddev = 1.0;
};

struct Dataset {
  std::vector<float> features;         // size() * example_numel() floats, example-major
  std::vector<int64_t> labels;         // in [0, num_classes)
  std::vector<int64_t> example_shape;  // e.g. {1, 28, 28} for images, {D} for tabular rows
  int num_classes = 0;
  std::vector<std::string> class_names;  // empty or num_classes names
  Preprocessing preprocessing;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t example_numel() const {
    int64_t n = 1;
    for (int64_t d : example_shape) n *= d;
    return n;
  }
  const float* example(int64_t i) const { return features.data() + i * example_numel(); }
};

// A subset of a shared dataset, by index. Copying copies the indices, not the data.
struct DatasetView {
  std::shared_ptr<const Dataset> base;
  std::vector<int64_t> indices;

  int64_t size() const { return static_cast<int64_t>(indices.size()); }
  bool empty() const { return indices.empty(); }
  int64_t label(int64_t i) const { return base->labels[indices[i]]; }
  const float* example(int64_t i) const { return base->example(indices[i]); }

  static DatasetView All(std::shared_ptr<const Dataset> dataset) {
    DatasetView v;
    v.indices.resize(dataset->size());
    for (int64_t i = 0; i < dataset->size(); ++i) v.indices[i] = i;
    v.base = std::move(dataset);
    return v;
  }
};

}  // namespace tessera::client
