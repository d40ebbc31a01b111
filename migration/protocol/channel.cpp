#include "channel.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <linux/sockios.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <climits>

#include <array>
#include <charconv>
#include <thread>

#include <fmt/format.h>

#include "error.h"

namespace migration {

uint64_t tcp_bdp_estimate(int fd);  // tcp_estimate.cpp

namespace asio = boost::asio;
using asio::ip::tcp;

Channel::Channel(tcp::socket socket, std::string peer) : socket_(std::move(socket)), peer_(std::move(peer)) {
  socket_.set_option(tcp::no_delay(true));
}

std::string Channel::mark_urgent() {
  constexpr int kDscpEf = 46 << 2;     // expedited forwarding, in the TOS byte
  constexpr int kInteractive = 6;      // TC_PRIO_INTERACTIVE: pfifo_fast band 0
  int fd = socket_.native_handle();
  bool v6 = socket_.local_endpoint().address().is_v6();
  int tos = kDscpEf, prio = kInteractive;
  // IP_TOS also sets the socket priority from the TOS: SO_PRIORITY comes after.
  if (v6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &tos, sizeof tos) < 0
         : ::setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof tos) < 0)
    return fmt::format("{}: {}", v6 ? "IPV6_TCLASS" : "IP_TOS", vmm::describe_errno(errno));
  if (::setsockopt(fd, SOL_SOCKET, SO_PRIORITY, &prio, sizeof prio) < 0)
    return fmt::format("SO_PRIORITY: {}", vmm::describe_errno(errno));
  return "";
}

// One writev of a frame already described by `bufs` (header first), under
// the send lock, so frames from several threads never interleave.
template <typename Buffers>
void Channel::write_frame(FrameType type, const Buffers& bufs, uint64_t bytes) {
  std::lock_guard lock(send_mutex_);
  boost::system::error_code ec;
  if (tls_)
    tls_->write({asio::buffer_sequence_begin(bufs), asio::buffer_sequence_end(bufs)}, ec);
  else
    asio::write(socket_, bufs, ec);
  if (ec)
    throw ConnectionError(fmt::format("sending {} to {} failed: {}", frame_type_name(type), peer_, ec.message()));
  bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
}

void Channel::send(FrameType type, uint32_t flags, std::span<const uint8_t> payload) {
  auto header = make_header(type, flags, payload);
  std::array<asio::const_buffer, 2> bufs = {asio::buffer(header), asio::buffer(payload.data(), payload.size())};
  write_frame(type, bufs, header.size() + payload.size());
}

void Channel::send_gather(FrameType type, uint32_t flags, std::span<const uint8_t> prefix,
                          const std::vector<std::span<const uint8_t>>& data, uint64_t data_bytes,
                          uint32_t data_crc) {
  uint64_t length = prefix.size() + data_bytes;
  auto header = make_header(type, flags, length, crc32c_combine(crc32c(0, prefix), data_crc, data_bytes));
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(2 + data.size());
  bufs.push_back(asio::buffer(header));
  bufs.push_back(asio::buffer(prefix.data(), prefix.size()));
  for (auto run : data) bufs.push_back(asio::buffer(run.data(), run.size()));
  write_frame(type, bufs, header.size() + length);
}

// Without a timeout, Asio's blocking read. With one, non-blocking recvmsg()
// and poll() only when nothing is there, until the bytes are in or the frame's
// deadline passed (Asio's blocking reads retry past SO_RCVTIMEO).
template <typename Buffers>
size_t Channel::read_all(const Buffers& bufs, size_t total, boost::system::error_code& ec) {
  if (tls_) return read_tls(bufs, ec);
  if (receive_timeout_.count() == 0) return asio::read(socket_, bufs, ec);
  std::vector<iovec> iov;
  for (auto it = asio::buffer_sequence_begin(bufs); it != asio::buffer_sequence_end(bufs); ++it) {
    asio::mutable_buffer b = *it;
    if (b.size()) iov.push_back({b.data(), b.size()});
  }
  size_t done = 0, first = 0;
  int fd = socket_.native_handle();
  while (done < total) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = std::min<size_t>(iov.size() - first, IOV_MAX);
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n == 0) {
      ec = asio::error::eof;
      return done;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return done;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(frame_deadline_ -
                                                                        std::chrono::steady_clock::now());
      pollfd pfd{fd, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) == 0) {
        ec = asio::error::timed_out;
        return done;
      }
      continue;
    }
    done += static_cast<size_t>(n);
    for (auto left = static_cast<size_t>(n); left > 0;) {  // advance past what was read
      if (left >= iov[first].iov_len) {
        left -= iov[first].iov_len;
        first++;
      } else {
        iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + left;
        iov[first].iov_len -= left;
        left = 0;
      }
    }
  }
  return done;
}

// Through TLS: what the engine holds or the socket has, polling the socket
// (outside the TLS lock, so that senders go on) when neither has any.
template <typename Buffers>
size_t Channel::read_tls(const Buffers& bufs, boost::system::error_code& ec) {
  size_t done = 0;
  for (auto it = asio::buffer_sequence_begin(bufs); it != asio::buffer_sequence_end(bufs); ++it) {
    asio::mutable_buffer b = *it;
    while (b.size()) {
      size_t n = tls_->read_some(b, ec);
      if (!ec) {
        b += n;
        done += n;
        continue;
      }
      if (ec != asio::error::would_block) return done;
      ec = {};
      int wait_ms = -1;
      if (receive_timeout_.count()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(frame_deadline_ -
                                                                          std::chrono::steady_clock::now());
        wait_ms = static_cast<int>(std::max<int64_t>(left.count(), 0));
      }
      pollfd pfd{socket_.native_handle(), POLLIN, 0};
      int rc = ::poll(&pfd, 1, wait_ms);
      if (rc == 0) {
        ec = asio::error::timed_out;
        return done;
      }
      if (rc < 0 && errno != EINTR) {
        ec = boost::system::error_code(errno, boost::system::system_category());
        return done;
      }
    }
  }
  return done;
}

FrameHeader Channel::receive_header(std::array<uint8_t, kHeaderSize>& raw) {
  frame_deadline_ = std::chrono::steady_clock::now() + receive_timeout_;
  boost::system::error_code ec;
  std::array<asio::mutable_buffer, 1> b = {asio::buffer(raw)};
  read_all(b, raw.size(), ec);
  if (ec == asio::error::timed_out)
    throw ConnectionError(fmt::format("{} sent nothing within the receive timeout ({} ms)", peer_,
                                      receive_timeout_.count()));
  if (ec == asio::error::eof) throw PeerClosed(fmt::format("{} closed the connection", peer_));
  if (ec) throw ConnectionError(fmt::format("receiving from {} failed: {}", peer_, ec.message()));
  bytes_received_.fetch_add(kHeaderSize, std::memory_order_relaxed);
  if (!tls_ && raw[0] == 0x16 && raw[1] == 0x03)  // a TLS handshake record
    throw ProtocolError(fmt::format("{} speaks TLS (it was given --psk-file) and this side has no key: run both "
                                    "sides with the same --psk-file", peer_));
  return decode_header(raw);
}

void Channel::read_exact(std::span<uint8_t> out) {
  boost::system::error_code ec;
  std::array<asio::mutable_buffer, 1> b = {asio::buffer(out.data(), out.size())};
  read_all(b, out.size(), ec);
  if (ec == asio::error::timed_out)
    throw ConnectionError(fmt::format("frame from {} did not arrive whole within {} ms", peer_,
                                      receive_timeout_.count()));
  if (ec) throw ConnectionError(fmt::format("frame from {} is truncated: {}", peer_, ec.message()));
  bytes_received_.fetch_add(out.size(), std::memory_order_relaxed);
}

void Channel::read_scatter(const std::vector<asio::mutable_buffer>& bufs, size_t total) {
  boost::system::error_code ec;
  size_t n = read_all(bufs, total, ec);
  if (ec == asio::error::timed_out)
    throw ConnectionError(fmt::format("frame from {} did not arrive whole within {} ms", peer_,
                                      receive_timeout_.count()));
  if (ec || n != total) throw ConnectionError(fmt::format("frame from {} is truncated: {}", peer_, ec.message()));
  bytes_received_.fetch_add(n, std::memory_order_relaxed);
}

Frame Channel::receive() {
  std::array<uint8_t, kHeaderSize> header;
  Frame f;
  f.header = receive_header(header);
  f.payload.resize(f.header.length);
  read_exact(f.payload);
  verify_crc(header, f.payload, f.header.crc);
  return f;
}

void Channel::set_receive_timeout(std::chrono::milliseconds timeout) { receive_timeout_ = timeout; }

std::string Channel::set_link_timeout(std::chrono::milliseconds timeout) {
  int fd = socket_.native_handle();
  auto ms = static_cast<unsigned>(timeout.count());
  int on = 1, idle = std::max(1, static_cast<int>(timeout.count() / 3000)), intvl = 1, cnt = 3;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) < 0)
    return "TCP_USER_TIMEOUT: " + vmm::describe_errno(errno);
  if (::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)
    return "TCP keepalive: " + vmm::describe_errno(errno);
  return "";
}

bool Channel::wait_sent(uint64_t bytes, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int queued = 0;
    if (::ioctl(socket_.native_handle(), SIOCOUTQ, &queued) < 0) return false;
    if (static_cast<uint64_t>(queued) <= bytes) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

uint64_t Channel::bdp_estimate() const {
  return tcp_bdp_estimate(const_cast<tcp::socket&>(socket_).native_handle());
}

void Channel::shutdown() {
  shut_ = true;
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
}

void Channel::start_tls(TlsConfig& config, bool server, std::chrono::milliseconds timeout) {
  auto tls = std::make_unique<TlsStream>(socket_, config, server);
  tls->handshake(std::chrono::steady_clock::now() + timeout, peer_);
  tls_ = std::move(tls);
}

bool Channel::peer_sent_plaintext_frame(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  int fd = socket_.native_handle();
  std::array<uint8_t, 4> first{};
  for (;;) {
    ssize_t n = ::recv(fd, first.data(), first.size(), MSG_PEEK | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(first.size())) return (first[0] | first[1] << 8 | first[2] << 16 | uint32_t{first[3]} << 24) == kMagic;
    if (n == 0) return false;  // closed: the handshake says so
    if (n > 0 && first[0] != (kMagic & 0xff)) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || shut_) return false;  // out of time, or ended by this side
    if (n > 0) {
      // Part of a header is here: the socket stays readable, so poll would
      // not wait. The rest comes within milliseconds, or never.
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(left.count(), 10)));
      continue;
    }
    pollfd pfd{fd, POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(left.count()));
  }
}

std::pair<std::string, uint16_t> split_host_port(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw vmm::Error(fmt::format("'{}' is not HOST:PORT", s));
  std::string host = s.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(s.data() + colon + 1, s.data() + s.size(), port);
  if (ec != std::errc() || end != s.data() + s.size() || port == 0 || port > 65535)
    throw vmm::Error(fmt::format("'{}' has no valid port (1..65535)", s));
  return {host, static_cast<uint16_t>(port)};
}

std::unique_ptr<Channel> connect_channel(asio::io_context& io, const std::string& host_port,
                                         std::chrono::milliseconds timeout) {
  auto [host, port] = split_host_port(host_port);
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) throw ConnectionError(fmt::format("cannot resolve {}: {}", host, ec.message()));
  tcp::socket socket(io);
  if (timeout.count() == 0) {
    asio::connect(socket, endpoints, ec);
    if (ec) throw ConnectionError(fmt::format("cannot connect to {}: {}", host_port, ec.message()));
    return std::make_unique<Channel>(std::move(socket), host_port);
  }
  // A timed connect: non-blocking, poll for writable, then SO_ERROR.
  const tcp::endpoint ep = *endpoints.begin();
  socket.open(ep.protocol());
  socket.non_blocking(true);
  socket.connect(ep, ec);
  if (ec == asio::error::in_progress || ec == asio::error::would_block) {
    pollfd pfd{socket.native_handle(), POLLOUT, 0};
    int rc = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    if (rc == 0) throw ConnectionError(fmt::format("cannot connect to {}: no answer within {} ms", host_port,
                                                   timeout.count()));
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(socket.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len);
    ec = err ? boost::system::error_code(err, boost::system::system_category()) : boost::system::error_code();
  }
  if (ec) throw ConnectionError(fmt::format("cannot connect to {}: {}", host_port, ec.message()));
  socket.non_blocking(false);
  return std::make_unique<Channel>(std::move(socket), host_port);
}

}  // namespace migration
