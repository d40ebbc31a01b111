#include "destination_link.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "error.h"
#include "messages.h"
#include "unique_fd.h"

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

std::unique_ptr<Channel> DestinationLink::accept_now() {
  tcp::socket socket(acceptor_->get_executor());
  boost::system::error_code ec;
  acceptor_->accept(socket, ec);
  if (ec) {
    spdlog::warn("receive: accept failed: {}", ec.message());
    return nullptr;
  }
  auto ep = socket.remote_endpoint(ec);
  std::string peer = ec ? std::string("source") : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  return std::make_unique<Channel>(std::move(socket), peer);
}

namespace {

// One connection in its handshake, on its own thread.
struct Pending {
  std::unique_ptr<Channel> channel;
  std::thread thread;
  std::atomic<bool> done{false};
  bool accepted = false;
  Hello hello;
  std::string failure;
};

void refuse(Channel& ch, const std::string& reason) {
  HelloReply no;
  no.reason = reason;
  try {
    ch.send(FrameType::HelloReply, 0, encode(no));
  } catch (const ConnectionError&) {
  }
}

// TLS (refusing a plaintext source in plaintext, so that it can say why),
// then the Hello and the caller's check of it.
void handshake(Pending& p, TlsConfig* tls, std::chrono::milliseconds timeout,
               const std::function<std::string(const Hello&)>& check) {
  Channel& ch = *p.channel;
  try {
    if (tls) {
      if (ch.peer_sent_plaintext_frame(timeout)) {
        p.failure = "it sent a plaintext migration frame and this destination takes only TLS (--psk-file)";
        refuse(ch, "this destination takes only TLS connections: run the source with the same --psk-file");
        return;
      }
      ch.start_tls(*tls, true, timeout);
    }
    ch.set_receive_timeout(timeout);
    Frame f = ch.receive();
    if (f.header.type != FrameType::Hello)
      throw ProtocolError(fmt::format("expected Hello, got {}", frame_type_name(f.header.type)));
    p.hello = decode_hello(f.payload);
    if (std::string why = check(p.hello); !why.empty()) {
      p.failure = "refused: " + why;
      refuse(ch, why);
      return;
    }
    p.accepted = true;
  } catch (const std::exception& e) {  // ConnectionError, ProtocolError
    p.failure = e.what();
  }
}

void end_all(std::vector<std::unique_ptr<Pending>>& pending) {
  for (auto& p : pending) {
    p->channel->shutdown();
    p->thread.join();
  }
  pending.clear();
}

// Runs one connection's handshake on its own thread, which writes to `wake`
// when it is done.
std::unique_ptr<Pending> start_handshake(std::unique_ptr<Channel> ch, TlsConfig* tls,
                                         std::chrono::milliseconds timeout,
                                         const std::function<std::string(const Hello&)>& check, int wake) {
  auto p = std::make_unique<Pending>();
  p->channel = std::move(ch);
  Pending* raw = p.get();
  p->thread = std::thread([raw, tls, timeout, &check, wake] {
    handshake(*raw, tls, timeout, check);
    raw->done = true;
    uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
  });
  return p;
}

// Joins the handshakes that are done: the first accepted one is the arrival
// (the others still under way are ended); a refused one is logged and dropped.
std::optional<Arrival> take_finished(std::vector<std::unique_ptr<Pending>>& pending, const char* what) {
  for (auto it = pending.begin(); it != pending.end();) {
    Pending& p = **it;
    if (!p.done) {
      ++it;
      continue;
    }
    p.thread.join();
    if (p.accepted) {
      Arrival a{std::move(p.channel), p.hello};
      pending.erase(it);
      end_all(pending);
      if (a.channel->tls()) spdlog::debug("receive: {} {} over TLS ({})", what, a.channel->peer(), a.channel->tls_cipher());
      return a;
    }
    spdlog::warn("receive: dropped a connection from {} ({}): {}; still listening", p.channel->peer(), what,
                 p.failure);
    it = pending.erase(it);
  }
  return std::nullopt;
}

}  // namespace

Arrival DestinationLink::accept_hello(const std::function<std::string(const Hello&)>& check,
                                      std::chrono::milliseconds handshake_timeout, std::chrono::milliseconds deadline,
                                      const char* what) {
  auto until = std::chrono::steady_clock::now() + deadline;
  std::vector<std::unique_ptr<Pending>> pending;
  // A handshake thread that finishes wakes this loop at once: the source
  // stops its guest right after its urgent Hello, so every ms this loop
  // sleeps is downtime (a 20 ms poll here was up to 20 ms of it, counted by
  // neither side).
  vmm::UniqueFd finished(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!finished) vmm::throw_errno("eventfd");
  for (;;) {
    if (auto arrival = take_finished(pending, what)) return std::move(*arrival);
    int wait_ms = -1;
    if (deadline.count() > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        end_all(pending);
        throw ConnectionError(fmt::format("no {} connection completed its handshake within {:g} s", what,
                                          static_cast<double>(deadline.count()) / 1000));
      }
      wait_ms = static_cast<int>(left.count());
    }
    std::array<pollfd, 2> fds{pollfd{acceptor_->native_handle(), POLLIN, 0}, pollfd{finished.get(), POLLIN, 0}};
    if (::poll(fds.data(), fds.size(), wait_ms) <= 0) continue;
    if (fds[1].revents) {
      uint64_t n;
      (void)!::read(finished.get(), &n, sizeof n);
    }
    if (!fds[0].revents) continue;
    auto ch = accept_now();
    if (!ch) continue;
    if (pending.size() >= kMaxPendingHandshakes) {
      spdlog::warn("receive: closed a connection from {} at once: {} others are in their handshake", ch->peer(),
                   pending.size());
      continue;
    }
    pending.push_back(start_handshake(std::move(ch), tls_.get(), handshake_timeout, check, finished.get()));
  }
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
  if (pages.empty()) return;  // nothing outstanding after a reconnection: an empty request is malformed
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
