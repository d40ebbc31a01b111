// The control socket of a running VM (`vmm run --api-socket PATH`): one JSON
// request per connection, one JSON reply line. It takes
//   {"command": "migrate", "to": "HOST:PORT", "mode": "hybrid", "precopy_rounds": 0}
// and answers when the migration has finished or failed, and
//   {"command": "status"}
// which it answers at once, also while a migration runs (its phase, and the
// lost links it has lived through).
#pragma once

#include <atomic>
#include <functional>
#include <future>
#include <mutex>
#include <vector>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

namespace vmm::cli {

struct ApiRequest {
  nlohmann::json body;
  std::promise<nlohmann::json> reply;
};

class ApiServer {
 public:
  ApiServer(const std::string& path, std::function<nlohmann::json()> status);
  ~ApiServer();
  // The next request, if one is waiting; the caller must set its reply.
  std::shared_ptr<ApiRequest> poll();

 private:
  void serve();

  std::string path_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::mutex mutex_;
  std::shared_ptr<ApiRequest> pending_;
  std::atomic<bool> busy_{false};  // a request is with the VMM's loop
  std::function<nlohmann::json()> status_;
  std::vector<std::thread> answering_;  // one per request the VMM's loop answers
  std::thread thread_;
};

// Client side, for `vmm migrate`: sends `request`, returns the reply.
nlohmann::json api_call(const std::string& path, const nlohmann::json& request);

}  // namespace vmm::cli
