#include "client/data/csv_reader.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <string_view>
#include <unordered_map>

#include "core/file_io.h"
#include "core/status.h"
#include "core/strings.h"

namespace tessera::client {
namespace {

using core::StrCat;

constexpr size_t kMaxCsvBytes = size_t{2} << 30;
constexpr int64_t kMaxClasses = 1'000'000;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Splits one line into fields. INVALID_ARGUMENT (without location) for an unterminated quote.
absl::Status SplitLine(std::string_view line, char delimiter, std::vector<std::string>* fields) {
  fields->clear();
  size_t i = 0;
  for (;;) {
    std::string field;
    // Skip blanks before a possible opening quote.
    size_t j = i;
    while (j < line.size() && (line[j] == ' ' || line[j] == '\t') && line[j] != delimiter) ++j;
    if (j < line.size() && line[j] == '"') {
      size_t k = j + 1;
      bool closed = false;
      while (k < line.size()) {
        if (line[k] == '"') {
          if (k + 1 < line.size() && line[k + 1] == '"') {
            field += '"';
            k += 2;
            continue;
          }
          closed = true;
          ++k;
          break;
        }
        field += line[k++];
      }
      if (!closed) return absl::InvalidArgumentError("unterminated quoted field");
      while (k < line.size() && line[k] != delimiter) {
        if (line[k] != ' ' && line[k] != '\t' && line[k] != '\r') {
          return absl::InvalidArgumentError("text after a closing quote");
        }
        ++k;
      }
      fields->push_back(std::move(field));
      if (k >= line.size()) return absl::OkStatus();
      i = k + 1;
    } else {
      size_t k = line.find(delimiter, i);
      std::string_view raw = line.substr(i, k == std::string_view::npos ? line.npos : k - i);
      fields->emplace_back(Trim(raw));
      if (k == std::string_view::npos) return absl::OkStatus();
      i = k + 1;
    }
  }
}

bool ParseFloat(std::string_view s, float* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty() && std::isfinite(*out);
}

bool ParseInt(std::string_view s, int64_t* out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && ptr == s.data() + s.size() && !s.empty();
}

}  // namespace

absl::StatusOr<Dataset> ReadCsvDataset(const std::string& path, const CsvOptions& options) {
  TESSERA_ASSIGN_OR_RETURN(std::string text, core::ReadFile(path, kMaxCsvBytes));
  if (options.delimiter == '"' || options.delimiter == '\n' || options.delimiter == '\r') {
    return absl::InvalidArgumentError(StrCat("invalid CSV delimiter for ", path));
  }

  Dataset out;
  std::vector<std::string> labels;   // raw label text per row
  std::vector<int64_t> label_lines;  // line number per row, for errors
  std::vector<std::string> fields;
  size_t num_fields = 0;  // fixed by the first row (header or data)
  int64_t first_row_line = 0;
  size_t label_col = 0;
  bool header_pending = options.has_header;
  int64_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (Trim(line).empty()) continue;
    absl::Status split = SplitLine(line, options.delimiter, &fields);
    if (!split.ok()) {
      return absl::InvalidArgumentError(StrCat(path, ":", line_number, ": ", split.message()));
    }
    if (num_fields == 0) {
      num_fields = fields.size();
      first_row_line = line_number;
      if (num_fields < 2) {
        return absl::InvalidArgumentError(StrCat(path, ":", line_number, ": found ", num_fields,
                                                 " column, need at least a feature and a label"));
      }
      if (options.label_column < -1 || options.label_column >= static_cast<int>(num_fields)) {
        return absl::InvalidArgumentError(StrCat(path, ": label_column ", options.label_column,
                                                 " is out of range for ", num_fields, " columns"));
      }
      label_col =
          options.label_column == -1 ? num_fields - 1 : static_cast<size_t>(options.label_column);
      out.example_shape = {static_cast<int64_t>(num_fields - 1)};
    } else if (fields.size() != num_fields) {
      return absl::InvalidArgumentError(StrCat(path, ":", line_number, ": expected ", num_fields,
                                               " fields (as on line ", first_row_line, "), got ",
                                               fields.size()));
    }
    if (header_pending) {
      header_pending = false;
      continue;
    }
    for (size_t c = 0; c < fields.size(); ++c) {
      if (c == label_col) continue;
      float v;
      if (!ParseFloat(fields[c], &v)) {
        return absl::InvalidArgumentError(StrCat(path, ":", line_number, ": column ", c + 1,
                                                 " is not a finite number: '", fields[c], "'"));
      }
      out.features.push_back(v);
    }
    labels.push_back(std::move(fields[label_col]));
    label_lines.push_back(line_number);
  }
  if (labels.empty()) {
    return absl::InvalidArgumentError(
        StrCat(path, ": no data rows", line_number == 0 ? " (empty file)" : ""));
  }

  // Integer class ids when every label is an integer, class names otherwise.
  bool all_integers = true;
  out.labels.resize(labels.size());
  for (size_t i = 0; i < labels.size() && all_integers; ++i) {
    all_integers = ParseInt(labels[i], &out.labels[i]);
  }
  if (all_integers) {
    int64_t max_label = 0;
    for (size_t i = 0; i < labels.size(); ++i) {
      if (out.labels[i] < 0) {
        return absl::InvalidArgumentError(
            StrCat(path, ":", label_lines[i], ": label ", out.labels[i], " is negative"));
      }
      if (out.labels[i] >= kMaxClasses) {
        return absl::InvalidArgumentError(StrCat(path, ":", label_lines[i], ": label ",
                                                 out.labels[i], " exceeds the limit of ",
                                                 kMaxClasses, " classes"));
      }
      max_label = std::max(max_label, out.labels[i]);
    }
    out.num_classes = static_cast<int>(max_label + 1);
  } else {
    std::unordered_map<std::string, int64_t> ids;
    for (size_t i = 0; i < labels.size(); ++i) {
      auto [it, inserted] = ids.emplace(labels[i], static_cast<int64_t>(ids.size()));
      if (inserted) {
        if (static_cast<int64_t>(ids.size()) > kMaxClasses) {
          return absl::InvalidArgumentError(
              StrCat(path, ":", label_lines[i], ": more than ", kMaxClasses, " classes"));
        }
        out.class_names.push_back(labels[i]);
      }
      out.labels[i] = it->second;
    }
    out.num_classes = static_cast<int>(out.class_names.size());
  }

  if (options.standardize) {
    TESSERA_RETURN_IF_ERROR(ApplyColumnStats(ComputeColumnStats(out), &out));
  }
  return out;
}

ColumnStats ComputeColumnStats(const Dataset& data) {
  const int64_t d = data.example_numel();
  const int64_t n = data.size();
  ColumnStats stats;
  stats.mean.assign(static_cast<size_t>(d), 0.0);
  stats.stddev.assign(static_cast<size_t>(d), 1.0);
  if (n == 0) return stats;
  for (int64_t i = 0; i < n; ++i) {
    const float* x = data.example(i);
    for (int64_t j = 0; j < d; ++j) stats.mean[j] += x[j];
  }
  for (double& m : stats.mean) m /= static_cast<double>(n);
  std::vector<double> sq(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const float* x = data.example(i);
    for (int64_t j = 0; j < d; ++j) {
      const double dev = x[j] - stats.mean[j];
      sq[j] += dev * dev;
    }
  }
  for (int64_t j = 0; j < d; ++j) {
    const double sd = std::sqrt(sq[j] / static_cast<double>(n));
    stats.stddev[j] = sd > 0 ? sd : 1.0;
  }
  return stats;
}

absl::Status ApplyColumnStats(const ColumnStats& stats, Dataset* data) {
  const int64_t d = data->example_numel();
  if (static_cast<int64_t>(stats.mean.size()) != d ||
      static_cast<int64_t>(stats.stddev.size()) != d) {
    return absl::InvalidArgumentError(
        StrCat("column stats have ", stats.mean.size(), " columns, the data has ", d));
  }
  if (d == 0) return absl::OkStatus();
  for (size_t i = 0; i < data->features.size(); ++i) {
    const size_t j = i % static_cast<size_t>(d);
    data->features[i] = static_cast<float>((data->features[i] - stats.mean[j]) / stats.stddev[j]);
  }
  return absl::OkStatus();
}

}  // namespace tessera::client
