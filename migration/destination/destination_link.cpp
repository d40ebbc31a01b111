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

std::pair<std::unique_ptr<Channel>, std::string> DestinationLink::accept_now() {
  tcp::socket socket(acceptor_->get_executor());
  boost::system::error_code ec;
  acceptor_->accept(socket, ec);
  if (ec) {
    spdlog::warn("receive: accept failed: {}", ec.message());
    return {};
  }
  auto ep = socket.remote_endpoint(ec);
  if (ec) return {};  // gone already
  std::string address = ep.address().to_string();
  std::string peer = fmt::format("{}:{}", address, ep.port());
  return {std::make_unique<Channel>(std::move(socket), peer), address};
}

namespace {

// One connection in its handshake, on its own thread.
struct Pending {
  std::unique_ptr<Channel> channel;
  std::string address;  // the peer's IP address, which the per-address bound counts
  std::chrono::steady_clock::time_point since;
  std::thread thread;
  std::atomic<bool> done{false};
  bool accepted = false;
  Hello hello;
  std::string failure;
  std::string cut;  // why this side ended it (the deadline, a newer connection)
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
std::unique_ptr<Pending> start_handshake(std::unique_ptr<Channel> ch, std::string address, TlsConfig* tls,
                                         std::chrono::milliseconds timeout,
                                         const std::function<std::string(const Hello&)>& check, int wake) {
  auto p = std::make_unique<Pending>();
  p->channel = std::move(ch);
  p->address = std::move(address);
  p->since = std::chrono::steady_clock::now();
  Pending* raw = p.get();
  p->thread = std::thread([raw, tls, timeout, &check, wake] {
    // The deadline is the accept loop's (cut_expired); the thread's own
    // timeouts are only a backstop, so that a handshake cut says why.
    handshake(*raw, tls, timeout * 2, check);
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
    if (p.accepted && p.cut.empty()) {  // a cut one's socket is shut, whatever it passed
      Arrival a{std::move(p.channel), p.hello};
      pending.erase(it);
      end_all(pending);
      if (a.channel->tls()) spdlog::debug("receive: {} {} over TLS ({})", what, a.channel->peer(), a.channel->tls_cipher());
      return a;
    }
    spdlog::warn("receive: dropped a connection from {} ({}): {}; still listening", p.channel->peer(), what,
                 p.cut.empty() ? p.failure : p.cut);
    it = pending.erase(it);
  }
  return std::nullopt;
}

// Ends one handshake from this side; its thread then finishes and is joined.
void cut(Pending& p, std::string why) {
  if (!p.cut.empty() || p.done) return;
  p.cut = std::move(why);
  p.channel->shutdown();
}

// Handshakes past their deadline are cut. Returns the time until the next
// deadline, or `none` when no handshake runs.
std::chrono::milliseconds cut_expired(std::vector<std::unique_ptr<Pending>>& pending, std::chrono::milliseconds limit,
                                      std::chrono::milliseconds none) {
  auto now = std::chrono::steady_clock::now();
  auto next = none;
  for (auto& p : pending) {
    if (p->done || !p->cut.empty()) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(p->since + limit - now);
    if (left.count() <= 0) {
      cut(*p, fmt::format("no Hello within the handshake deadline ({:g} s, --handshake-timeout)",
                          static_cast<double>(limit.count()) / 1000));
      continue;
    }
    if (next.count() < 0 || left < next) next = left;
  }
  return next;
}

// The handshakes that still count against the bounds.
size_t live(const std::vector<std::unique_ptr<Pending>>& pending, const std::string* address = nullptr) {
  size_t n = 0;
  for (auto& p : pending)
    if (!p->done && p->cut.empty() && (!address || p->address == *address)) n++;
  return n;
}

// Room for one more: the oldest handshake of the address that holds the most
// of them goes. A source completes its handshake in milliseconds, so the
// oldest of a crowd is the likeliest stray, and one address cannot take the
// places of all the others.
void make_room(std::vector<std::unique_ptr<Pending>>& pending) {
  Pending* victim = nullptr;
  size_t victim_count = 0;
  for (auto& p : pending) {
    if (p->done || !p->cut.empty()) continue;
    size_t n = live(pending, &p->address);
    if (!victim || n > victim_count || (n == victim_count && p->since < victim->since)) victim = p.get(), victim_count = n;
  }
  if (victim)
    cut(*victim, fmt::format("ended for a newer connection: {} handshakes at once is the bound",
                             DestinationLink::kMaxPendingHandshakes));
}

}  // namespace

Arrival DestinationLink::accept_hello(const std::function<std::string(const Hello&)>& check,
                                      std::chrono::milliseconds handshake_timeout, std::chrono::milliseconds deadline,
                                      const char* what) {
  auto until = std::chrono::steady_clock::now() + deadline;
  // A handshake thread that finishes wakes this loop at once: the source
  // stops its guest right after its urgent Hello, so every ms this loop
  // sleeps is downtime, counted by neither side (docs/lab: figures from the
  // code's comments). Made before `pending`, whose threads write to it.
  vmm::UniqueFd finished(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!finished) vmm::throw_errno("eventfd");
  std::vector<std::unique_ptr<Pending>> pending;
  // Whatever ends this loop ends its handshakes first: a joinable thread
  // left behind would end the process.
  struct EndAll {
    std::vector<std::unique_ptr<Pending>>& pending;
    ~EndAll() { end_all(pending); }
  } end_on_exit{pending};
  for (;;) {
    if (auto arrival = take_finished(pending, what)) return std::move(*arrival);
    auto wait = cut_expired(pending, handshake_timeout, std::chrono::milliseconds(-1));
    if (deadline.count() > 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        end_all(pending);
        throw ConnectionError(fmt::format("no {} connection completed its handshake within {:g} s", what,
                                          static_cast<double>(deadline.count()) / 1000));
      }
      if (wait.count() < 0 || left < wait) wait = left;
    }
    std::array<pollfd, 2> fds{pollfd{acceptor_->native_handle(), POLLIN, 0}, pollfd{finished.get(), POLLIN, 0}};
    // +1: wake just past a deadline, not just before it.
    if (::poll(fds.data(), fds.size(), wait.count() < 0 ? -1 : static_cast<int>(wait.count()) + 1) <= 0) continue;
    if (fds[1].revents) {
      uint64_t n;
      (void)!::read(finished.get(), &n, sizeof n);
    }
    if (!fds[0].revents) continue;
    auto [ch, address] = accept_now();
    if (!ch) continue;
    if (size_t n = live(pending, &address); n >= kMaxPendingPerAddress) {
      spdlog::warn("receive: closed a connection from {} at once: {} others from {} are in their handshake",
                   ch->peer(), n, address);
      continue;
    }
    if (live(pending) >= kMaxPendingHandshakes) make_room(pending);
    pending.push_back(
        start_handshake(std::move(ch), std::move(address), tls_.get(), handshake_timeout, check, finished.get()));
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
