#include "client/serving/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <utility>

#include "client/serving/listen_address.h"
#include "core/strings.h"
#include "nlohmann/json.hpp"

namespace tessera::client::serving {
namespace {

using core::StrCat;
using nlohmann::json;

int HttpStatusOf(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      return 400;
    case absl::StatusCode::kResourceExhausted:
      return 413;
    case absl::StatusCode::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

void Reply(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

void ReplyError(httplib::Response& res, int status, std::string_view message) {
  Reply(res, status, json{{"error", message}});
}

void ReplyError(httplib::Response& res, const absl::Status& s) {
  ReplyError(res, HttpStatusOf(s), std::string_view(s.message().data(), s.message().size()));
}

// {"instances": [[...], ...]} -> example-major floats; the service checks sizes and finiteness
// once they are floats, this checks only what JSON can get wrong.
absl::Status ParseInstances(const std::string& body, int64_t num_features, std::vector<float>* values,
                            int64_t* batch) {
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return absl::InvalidArgumentError("the body is not valid JSON");
  if (!doc.is_object() || !doc.contains("instances") || !doc["instances"].is_array()) {
    return absl::InvalidArgumentError(R"(expected {"instances": [[...], ...]})");
  }
  const json& instances = doc["instances"];
  *batch = static_cast<int64_t>(instances.size());
  values->reserve(instances.size() * static_cast<size_t>(num_features));
  for (size_t i = 0; i < instances.size(); ++i) {
    const json& row = instances[i];
    if (!row.is_array() || static_cast<int64_t>(row.size()) != num_features) {
      return absl::InvalidArgumentError(
          StrCat("instance ", i, " must be a flat array of ", num_features, " numbers"));
    }
    for (const json& v : row) {
      if (!v.is_number()) return absl::InvalidArgumentError(StrCat("instance ", i, " holds a value that is not a number"));
      // A double outside float's range has no float value (the cast would be undefined).
      const double d = v.get<double>();
      if (!(std::abs(d) <= std::numeric_limits<float>::max())) {
        return absl::InvalidArgumentError(StrCat("instance ", i, " holds a value outside float32's finite range"));
      }
      values->push_back(static_cast<float>(d));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const PredictionService* service,
                                                              const std::string& address, HttpServerOptions options) {
  const ServingOptions& so = service->options();
  if (!options.class_labels.empty() && static_cast<int>(options.class_labels.size()) != so.num_classes) {
    return absl::InvalidArgumentError(
        StrCat(options.class_labels.size(), " class labels for a model of ", so.num_classes, " classes"));
  }
  std::string host;
  int port = 0;
  if (absl::Status s = SplitHostPort(address, &host, &port); !s.ok()) return s;
  if (absl::Status s = ProbeListen(address); !s.ok()) return s;
  const size_t max_body = options.max_body_bytes > 0
                              ? options.max_body_bytes
                              : static_cast<size_t>(so.max_batch * so.num_features) * 32 + 4096;

  std::unique_ptr<HttpServer> self(new HttpServer());
  self->server_ = std::make_unique<httplib::Server>();
  httplib::Server& srv = *self->server_;
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second server
  // share a port that another one listens on instead of refusing it.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  // Without TCP_NODELAY a response written in two parts waits for the peer's delayed ACK
  // (~40 ms per request on Linux loopback).
  srv.set_tcp_nodelay(true);
  srv.set_payload_max_length(max_body);
  srv.set_keep_alive_max_count(1000);
  // Statuses without a body of ours (404 from routing, 413 from the body limit) get one.
  srv.set_error_handler(httplib::Server::HandlerWithResponse([max_body](const httplib::Request& req,
                                                                       httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    // cpp-httplib caps form-encoded bodies (curl's default type for --data) at 8 KiB.
    const bool form = req.get_header_value("Content-Type") == "application/x-www-form-urlencoded";
    const std::string message =
        res.status == 404   ? "no such path"
        : res.status == 413 ? (form ? "the body is too large for a form-encoded request: send it as application/json"
                                    : StrCat("the request body is larger than ", max_body, " bytes"))
                            : StrCat("HTTP status ", res.status);
    ReplyError(res, res.status, message);
    return httplib::Server::HandlerResponse::Handled;
  }));
  srv.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    ReplyError(res, 500, "internal error");
  });

  srv.Post("/v1/predict", [service, labels = options.class_labels](const httplib::Request& req,
                                                                    httplib::Response& res) {
    std::vector<float> values;
    int64_t batch = 0;
    absl::Status parsed = ParseInstances(req.body, service->options().num_features, &values, &batch);
    if (!parsed.ok()) return ReplyError(res, parsed);
    auto prediction = service->Predict(values, batch);
    if (!prediction.ok()) return ReplyError(res, prediction.status());
    const int c = prediction->num_classes;
    json predictions = json::array();
    for (int64_t i = 0; i < batch; ++i) {
      const float* row = prediction->logits.data() + i * c;
      json p = {{"class", prediction->classes[i]}, {"logits", std::vector<float>(row, row + c)}};
      if (!labels.empty()) p["label"] = labels[prediction->classes[i]];
      predictions.push_back(std::move(p));
    }
    Reply(res, 200, json{{"predictions", std::move(predictions)},
                         {"model_version", prediction->model->version},
                         {"round", prediction->model->round}});
  });
  srv.Get("/v1/model", [service](const httplib::Request&, httplib::Response& res) {
    auto model = service->Current();
    if (model == nullptr) return ReplyError(res, 503, "no model to serve yet (before the first round)");
    const ServingOptions& o = service->options();
    Reply(res, 200, json{{"model_version", model->version}, {"round", model->round}, {"metrics", model->metrics},
                         {"num_features", o.num_features}, {"num_classes", o.num_classes},
                         {"max_batch", o.max_batch}});
  });
  srv.Get("/healthz", [service](const httplib::Request&, httplib::Response& res) {
    auto model = service->Current();
    if (model == nullptr) return Reply(res, 503, json{{"status", "no model yet"}});
    Reply(res, 200, json{{"status", "ok"}, {"model_version", model->version}});
  });
  auto wrong_method = [](const httplib::Request& req, httplib::Response& res) {
    ReplyError(res, 405, StrCat("method ", req.method, " is not allowed on ", req.path));
  };
  srv.Get("/v1/predict", wrong_method);
  srv.Post("/v1/model", wrong_method);
  srv.Post("/healthz", wrong_method);

  if (port == 0) {
    self->port_ = srv.bind_to_any_port(host);
  } else if (srv.bind_to_port(host, port)) {
    self->port_ = port;
  }
  if (self->port_ <= 0) return absl::UnavailableError(StrCat("cannot listen on ", address));  // taken since the probe
  HttpServer* raw = self.get();
  self->listener_ = std::thread([raw] {
    raw->server_->listen_after_bind();
    raw->listener_exited_ = true;
  });
  // stop() is a no-op until the listener runs: wait for it, so that Shutdown() cannot hang.
  while (!srv.is_running() && !raw->listener_exited_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return self;
}

HttpServer::~HttpServer() { Shutdown(); }

void HttpServer::Shutdown() {
  if (server_) server_->stop();
  if (listener_.joinable()) listener_.join();
}

}  // namespace tessera::client::serving
