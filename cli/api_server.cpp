#include "api_server.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <chrono>

#include <filesystem>
#include <istream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"

namespace vmm::cli {

namespace asio = boost::asio;
using asio::local::stream_protocol;

namespace {

constexpr size_t kMaxRequest = 64 * 1024;
// A client gets this long to send its request line: one that connects and
// says nothing must not hold the server (nor the VMM's exit) for good.
constexpr int kRequestTimeoutMs = 5000;

nlohmann::json read_json_line(stream_protocol::socket& s) {
  asio::streambuf buf(kMaxRequest);
  asio::read_until(s, buf, '\n');
  std::istream in(&buf);
  std::string line;
  std::getline(in, line);
  return nlohmann::json::parse(line);
}

// The request line, within kRequestTimeoutMs and kMaxRequest bytes.
nlohmann::json read_request(stream_protocol::socket& s) {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRequestTimeoutMs);
  char buf[4096];
  while (line.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd pfd{s.native_handle(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
      throw Error(fmt::format("no request line within {} s", kRequestTimeoutMs / 1000));
    boost::system::error_code ec;
    size_t n = s.read_some(asio::buffer(buf), ec);
    if (ec) throw Error("the client closed before sending a request line");
    line.append(buf, n);
    if (line.size() > kMaxRequest) throw Error(fmt::format("request longer than {} bytes", kMaxRequest));
  }
  return nlohmann::json::parse(line.substr(0, line.find('\n')));
}

void write_json_line(stream_protocol::socket& s, const nlohmann::json& j) {
  std::string line = j.dump() + "\n";
  asio::write(s, asio::buffer(line));
}

}  // namespace

struct ApiServer::Impl {
  asio::io_context io;
  stream_protocol::acceptor acceptor{io};
};

ApiServer::ApiServer(const std::string& path, std::function<nlohmann::json()> status)
    : path_(path), impl_(std::make_unique<Impl>()), status_(std::move(status)) {
  std::error_code fs_ec;
  if (std::filesystem::is_socket(path, fs_ec)) std::filesystem::remove(path, fs_ec);  // stale socket of a dead VMM
  boost::system::error_code ec;
  stream_protocol::endpoint ep(path);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  // Whoever can connect can migrate this VM anywhere: the owner only.
  if (!ec) {
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                                 fs_ec);
    if (fs_ec) throw Error(fmt::format("--api-socket {}: cannot make it owner-only: {}", path, fs_ec.message()));
  }
  if (!ec) impl_->acceptor.listen(4, ec);
  if (ec) throw Error(fmt::format("--api-socket {}: {}", path, ec.message()));
  spdlog::info("api: listening on {}", path);
  thread_ = std::thread([this] { serve(); });
}

ApiServer::~ApiServer() {
  // close() alone does not wake an accept() blocked in another thread;
  // shutdown() on the listening socket does (it then fails with EINVAL).
  ::shutdown(impl_->acceptor.native_handle(), SHUT_RDWR);
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(mutex_);
    if (pending_) pending_->reply.set_value({{"ok", false}, {"error", "the VMM is exiting"}});
    pending_.reset();
  }
  for (auto& t : answering_) t.join();
  std::error_code fs_ec;
  std::filesystem::remove(path_, fs_ec);
}

std::shared_ptr<ApiRequest> ApiServer::poll() {
  std::lock_guard lock(mutex_);
  return std::exchange(pending_, nullptr);
}

void ApiServer::serve() {
  for (;;) {
    auto s = std::make_shared<stream_protocol::socket>(impl_->io);
    boost::system::error_code ec;
    impl_->acceptor.accept(*s, ec);
    if (ec) return;  // closed: the VMM is exiting
    auto answer = [](stream_protocol::socket& sock, const nlohmann::json& reply) {
      try {
        write_json_line(sock, reply);
      } catch (const std::exception& e) {
        spdlog::warn("api: could not answer the client: {}", e.what());
      }
    };
    auto req = std::make_shared<ApiRequest>();
    try {
      req->body = read_request(*s);
      if (!req->body.is_object()) throw Error("a request is a JSON object, e.g. {\"command\": \"migrate\", ...}");
      if (req->body.value("command", "") == "status") {  // answered here, even while a migration runs
        answer(*s, status_ ? status_() : nlohmann::json{{"ok", true}});
        continue;
      }
      std::lock_guard lock(mutex_);
      if (pending_ || busy_) throw Error("another request is in progress");
      pending_ = req;
      busy_ = true;
    } catch (const std::exception& e) {
      answer(*s, {{"ok", false}, {"error", e.what()}});
      continue;
    }
    // The VMM's loop answers it, perhaps only when a migration ends.
    answering_.emplace_back([this, s, req, answer] {
      nlohmann::json reply;
      try {
        reply = req->reply.get_future().get();
      } catch (const std::future_error&) {  // dropped unanswered: the VMM is going down
        reply = {{"ok", false}, {"error", "the VMM stopped before answering"}};
      }
      answer(*s, reply);
      busy_ = false;
    });
  }
}

nlohmann::json api_call(const std::string& path, const nlohmann::json& request) {
  asio::io_context io;
  stream_protocol::socket s(io);
  boost::system::error_code ec;
  s.connect(stream_protocol::endpoint(path), ec);
  if (ec) throw Error(fmt::format("cannot reach the VMM at --api-socket {}: {}", path, ec.message()));
  write_json_line(s, request);
  try {
    return read_json_line(s);
  } catch (const std::exception& e) {
    throw Error(fmt::format("the VMM at {} closed without an answer ({}); it may have exited", path, e.what()));
  }
}

}  // namespace vmm::cli
