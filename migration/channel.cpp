#include "channel.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <linux/sockios.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

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
  asio::write(socket_, bufs, ec);
  if (ec)
    throw ConnectionError(fmt::format("sending {} to {} failed: {}", frame_type_name(type), peer_, ec.message()));
  bytes_sent_ += bytes;
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

FrameHeader Channel::receive_header(std::array<uint8_t, kHeaderSize>& raw) {
  if (receive_timeout_.count() > 0) {
    pollfd pfd{socket_.native_handle(), POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(receive_timeout_.count())) == 0)
      throw ConnectionError(fmt::format("{} sent nothing within the receive timeout ({} ms)", peer_,
                                        receive_timeout_.count()));
  }
  boost::system::error_code ec;
  asio::read(socket_, asio::buffer(raw), ec);
  if (ec == asio::error::eof) throw ConnectionError(fmt::format("{} closed the connection", peer_));
  if (ec) throw ConnectionError(fmt::format("receiving from {} failed: {}", peer_, ec.message()));
  bytes_received_ += kHeaderSize;
  return decode_header(raw);
}

void Channel::read_exact(std::span<uint8_t> out) {
  boost::system::error_code ec;
  asio::read(socket_, asio::buffer(out.data(), out.size()), ec);
  if (ec) throw ConnectionError(fmt::format("frame from {} is truncated: {}", peer_, ec.message()));
  bytes_received_ += out.size();
}

void Channel::read_scatter(const std::vector<asio::mutable_buffer>& bufs, size_t total) {
  boost::system::error_code ec;
  size_t n = asio::read(socket_, bufs, ec);
  if (ec || n != total) throw ConnectionError(fmt::format("frame from {} is truncated: {}", peer_, ec.message()));
  bytes_received_ += n;
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

// Asio's blocking reads retry past SO_RCVTIMEO (they poll on EAGAIN), so the
// timeout is a poll() before each frame instead.
void Channel::set_receive_timeout(std::chrono::milliseconds timeout) { receive_timeout_ = timeout; }

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
  boost::system::error_code ec;
  socket_.shutdown(tcp::socket::shutdown_both, ec);
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

std::unique_ptr<Channel> connect_channel(asio::io_context& io, const std::string& host_port) {
  auto [host, port] = split_host_port(host_port);
  tcp::resolver resolver(io);
  boost::system::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) throw ConnectionError(fmt::format("cannot resolve {}: {}", host, ec.message()));
  tcp::socket socket(io);
  asio::connect(socket, endpoints, ec);
  if (ec) throw ConnectionError(fmt::format("cannot connect to {}: {}", host_port, ec.message()));
  return std::make_unique<Channel>(std::move(socket), host_port);
}

}  // namespace migration
