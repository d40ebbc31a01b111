#include "destination_link.h"

#include <poll.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "messages.h"

namespace migration {

namespace asio = boost::asio;
using asio::ip::tcp;

DestinationLink::~DestinationLink() { heartbeat_.reset(); }

void DestinationLink::listen(const std::string& host_port) {
  auto [host, port] = split_host_port(host_port);
  acceptor_ = std::make_unique<tcp::acceptor>(io_);
  tcp::endpoint ep(asio::ip::make_address(host), port);
  acceptor_->open(ep.protocol());
  acceptor_->set_option(tcp::acceptor::reuse_address(true));
  boost::system::error_code ec;
  acceptor_->bind(ep, ec);
  if (ec) throw vmm::Error(fmt::format("cannot listen on {}: {}", host_port, ec.message()));
  acceptor_->listen();
}

std::unique_ptr<Channel> DestinationLink::accept(std::chrono::milliseconds timeout, const char* what) {
  if (timeout.count() > 0) {
    pollfd pfd{acceptor_->native_handle(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) == 0)
      throw ConnectionError(fmt::format("no {} connection within {} s", what, timeout.count() / 1000));
  }
  tcp::socket socket(acceptor_->get_executor());
  boost::system::error_code ec;
  acceptor_->accept(socket, ec);
  if (ec) throw ConnectionError("accept failed: " + ec.message());
  auto ep = socket.remote_endpoint(ec);
  std::string peer = ec ? std::string("source") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  return std::make_unique<Channel>(std::move(socket), peer);
}

void DestinationLink::replace(std::unique_ptr<Channel> main, std::unique_ptr<Channel> urgent) {
  std::lock_guard lock(mutex_);
  main_before_ += main_->bytes_received();
  urgent_before_ += urgent_->bytes_received();
  main_ = std::move(main);
  urgent_ = std::move(urgent);
}

void DestinationLink::up(const LinkOptions& o) {
  for (auto* ch : {main_.get(), urgent_.get()})
    if (auto why = ch->set_link_timeout(o.link_timeout); !why.empty())
      spdlog::warn("receive: a blocked send notices a lost link only from the receive side ({} refused)", why);
  // Silence on the main connection for the link timeout is a lost link; the
  // urgent one idles whenever the guest does not fault.
  main_->set_receive_timeout(o.link_timeout);
  urgent_->set_receive_timeout(std::chrono::milliseconds(0));
  heartbeat_ = std::make_unique<Heartbeat>(*main_, o.link_timeout / 4);
  std::lock_guard lock(mutex_);
  up_ = true;
}

void DestinationLink::down() {
  {
    std::lock_guard lock(mutex_);
    up_ = false;
  }
  main_->shutdown();
  urgent_->shutdown();
  heartbeat_.reset();
}

void DestinationLink::request(const std::vector<uint64_t>& pages) {
  std::lock_guard lock(mutex_);
  if (!up_) return;
  try {
    if (pages.size() <= kMaxRequestPages) {  // a fault's batch (at most 64): no copy on the fault path
      urgent_->send(FrameType::PageRequest, 0, encode_request(pages));
      return;
    }
    for (size_t i = 0; i < pages.size(); i += kMaxRequestPages) {  // after a reconnection, all outstanding
      std::vector<uint64_t> part(pages.begin() + static_cast<long>(i),
                                 pages.begin() + static_cast<long>(std::min(pages.size(), i + kMaxRequestPages)));
      urgent_->send(FrameType::PageRequest, 0, encode_request(part));
    }
  } catch (const ConnectionError& e) {
    spdlog::debug("receive: page request: {}", e.what());
    up_ = false;
    main_->shutdown();
  }
}

void DestinationLink::end_postcopy() {
  heartbeat_.reset();
  {
    std::lock_guard lock(mutex_);
    up_ = false;
  }
  urgent_->shutdown();
}

void DestinationLink::end_main() {
  std::lock_guard lock(mutex_);
  main_->shutdown();
}

}  // namespace migration
