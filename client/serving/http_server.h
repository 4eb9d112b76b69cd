// HttpServer: the HTTP/JSON face of a PredictionService (cpp-httplib, plaintext; bind it to a
// local or trusted address).
//
//   POST /v1/predict  {"instances": [[v, ...], ...]}: each instance a flat array of the model's
//                     num_features raw values (e.g. 784 pixel values in [0, 255]).
//                     200 {"predictions": [{"class": k, "label": "...", "logits": [...]}, ...],
//                          "model_version": N, "round": R}  ("label" only when labels are known)
//   GET  /v1/model    200 {"model_version": N, "round": R, "metrics": {...}, "num_features": F,
//                          "num_classes": C, "max_batch": B}; 503 before the first model
//   GET  /healthz     200 {"status": "ok", "model_version": N}; 503 {"status": "no model yet"}
//
// Every error is a JSON body {"error": "..."}: 400 for malformed JSON or a request the service
// refuses (shape, NaN / Inf, empty or oversized batch), 413 for a body above max_body_bytes,
// 404 for an unknown path, 405 for a known path with another method, 503 before the first model,
// 500 for our own failure. A request never crashes the server.
//
// Threads: cpp-httplib's pool answers requests concurrently; the service is thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "client/serving/prediction_service.h"

namespace httplib {
class Server;
}

namespace tessera::client::serving {

struct HttpServerOptions {
  // Largest request body; 0 derives it from the service's max_batch and num_features (about
  // 32 bytes of JSON per value, plus 4 KiB).
  size_t max_body_bytes = 0;
  std::vector<std::string> class_labels;  // empty, or one name per class
};

class HttpServer {
 public:
  // Binds `address` ("host:port"; port 0 picks a free port, see port()) and starts serving
  // `service` (borrowed; it must outlive the server). INVALID_ARGUMENT for a malformed address
  // (see listen_address.h) or labels of the wrong count; UNAVAILABLE "cannot listen on ADDR: ..."
  // when the address cannot be bound (e.g. the port is taken: SO_REUSEPORT is off).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const PredictionService* service,
                                                           const std::string& address,
                                                           HttpServerOptions options = {});
  ~HttpServer();  // Shutdown()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops accepting, lets the running requests finish, joins the threads. Idempotent.
  void Shutdown();
  int port() const { return port_; }

 private:
  HttpServer() = default;

  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> listener_exited_{false};
  int port_ = 0;
};

}  // namespace tessera::client::serving
