// The destination's two connections to the source during one migration:
// the listening socket (kept open, for the source's reconnection after a lost
// link), the main and urgent connections, the heartbeat on the main one, and
// whether the link is up. A reconnection replaces both connections whole; the
// bytes received survive the replacement.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "channel.h"
#include "link.h"
#include "messages.h"
#include "tls.h"

namespace migration {

// A connection that completed its handshake: TLS (when there is a key), then
// a Hello that the caller's check let in.
struct Arrival {
  std::unique_ptr<Channel> channel;
  Hello hello;
};

class DestinationLink {
 public:
  // At most this many connections are in their handshake at once: one more
  // ends the oldest of the address that holds the most. From one address, at
  // most kMaxPendingPerAddress: more are closed as they come. A source opens
  // one connection at a time.
  static constexpr size_t kMaxPendingHandshakes = 16;
  static constexpr size_t kMaxPendingPerAddress = 2;

  // `tls`: the key every connection must prove (nullptr: plaintext).
  DestinationLink(boost::asio::io_context& io, std::shared_ptr<TlsConfig> tls) : io_(io), tls_(std::move(tls)) {}
  ~DestinationLink();

  // Binds and listens on HOST:PORT; throws vmm::Error when it cannot.
  void listen(const std::string& host_port);
  // Takes connections until one completes its handshake within
  // `handshake_timeout` of its arrival (TLS and Hello together: a peer that
  // trickles bytes gains nothing) and sends a Hello that `check` lets in (it
  // returns "" or the reason for a refusal, which is sent back).
  // Every other connection is refused or dropped, logged, and listening goes
  // on. ConnectionError when `deadline` passes first (0: wait for ever);
  // `what` names the connection in the log and that error.
  Arrival accept_hello(const std::function<std::string(const Hello&)>& check,
                       std::chrono::milliseconds handshake_timeout, std::chrono::milliseconds deadline,
                       const char* what);

  void set_main(std::unique_ptr<Channel> ch) { main_ = std::move(ch); }
  void set_urgent(std::unique_ptr<Channel> ch) { urgent_ = std::move(ch); }
  // Puts a reconnection's connections in place of the lost ones.
  void replace(std::unique_ptr<Channel> main, std::unique_ptr<Channel> urgent);
  bool has_urgent() const { return urgent_ != nullptr; }
  Channel& main() { return *main_; }
  Channel& urgent() { return *urgent_; }

  // Postcopy: timeouts for a lost link on both connections, a heartbeat on
  // the main one, requests allowed. down() undoes it and ends both
  // connections, so whatever blocks on them returns.
  void up(const LinkOptions& o);
  void down();
  // Asks for pages on the urgent connection; while the link is down they are
  // dropped (they stay Requested, and are asked for again once it is back).
  // A send that fails takes the link down and ends the main connection, so
  // that the main thread notices.
  void request(const std::vector<uint64_t>& pages);
  // Ends the main connection now (a failure no reconnection mends).
  void end_main();
  // Every page is here: no more heartbeats or requests; the urgent connection
  // ends (the source's server stops), the main one stays for the source to close.
  void end_postcopy();

  uint64_t main_bytes() const { return main_before_ + main_->bytes_received(); }
  uint64_t urgent_bytes() const { return urgent_before_ + urgent_->bytes_received(); }

 private:
  // The connection and its peer's IP address; none when accept failed.
  std::pair<std::unique_ptr<Channel>, std::string> accept_now();

  boost::asio::io_context& io_;
  std::shared_ptr<TlsConfig> tls_;
  std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor_;
  std::mutex mutex_;  // main_ and urgent_ are replaced, and requests sent, under it
  std::unique_ptr<Channel> main_, urgent_;
  bool up_ = false;
  std::unique_ptr<Heartbeat> heartbeat_;
  uint64_t main_before_ = 0, urgent_before_ = 0;  // on connections since replaced
};

}  // namespace migration
