// The control socket of a running VM (`vmm run --api-socket PATH`): one JSON
// request per connection, one JSON reply line. Today it takes
//   {"command": "migrate", "to": "HOST:PORT", "mode": "hybrid", "precopy_rounds": 0}
// and answers when the migration has finished or failed.
#pragma once

#include <future>
#include <mutex>
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
  explicit ApiServer(const std::string& path);
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
  std::thread thread_;
};

// Client side, for `vmm migrate`: sends `request`, returns the reply.
nlohmann::json api_call(const std::string& path, const nlohmann::json& request);

}  // namespace vmm::cli
