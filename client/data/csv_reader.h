// Reader for tabular datasets in delimited text (CSV): one example per line, numeric feature
// columns and one label column.
//
// Labels that are all integers are class ids (num_classes = max + 1, negatives rejected);
// otherwise every label is a class name and ids follow the order of first appearance
// (class_names records them). Fields may be double-quoted ("a ""b"""); a quoted field cannot
// span lines. Blank lines are skipped. Functions are thread-safe (they share no state).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/data/dataset.h"

namespace tessera::client {

struct CsvOptions {
  int label_column = -1;   // 0-based; -1 means the last column
  bool has_header = true;  // the first non-blank line names the columns and is skipped
  char delimiter = ',';
  // Z-score each feature column with the file's own mean and standard deviation. For a test set
  // that must use the training set's statistics, read it unstandardized and call
  // ApplyColumnStats with the training set's ComputeColumnStats instead.
  bool standardize = false;
};

// Reads `path` into a Dataset with example_shape {D} (D = columns - 1) and identity
// preprocessing. Errors name the file and, for a bad row, its 1-based line number:
// NOT_FOUND (no such file), INVALID_ARGUMENT (empty file or no data rows, label_column out of
// range, a row with a different number of fields than the first, a feature that is not a finite
// number, a negative integer label, more than 1,000,000 classes).
absl::StatusOr<Dataset> ReadCsvDataset(const std::string& path, const CsvOptions& options);

// Per-feature statistics of a Dataset's features.
struct ColumnStats {
  std::vector<double> mean;
  std::vector<double> stddev;  // population standard deviation; 1 where a column is constant
};

// Mean and standard deviation of each of the example_numel() feature positions.
ColumnStats ComputeColumnStats(const Dataset& data);

// x' = (x - mean) / stddev per feature position. INVALID_ARGUMENT when `stats` has a different
// width than data->example_numel() (the data is unchanged then).
absl::Status ApplyColumnStats(const ColumnStats& stats, Dataset* data);

}  // namespace tessera::client
