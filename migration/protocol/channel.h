// One migration connection: framed, checksummed messages over a blocking
// Boost.Asio TCP socket. send() may be called from several threads; receive()
// from one. Asio errors become ConnectionError here, at the socket edge.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <span>
#include <vector>

#include "tls.h"
#include "wire.h"

namespace migration {

class ConnectionError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The peer closed the connection cleanly between frames (EOF at a frame's start).
class PeerClosed : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// The TLS handshake failed on what the peer holds (another key, no key, a
// certificate), not on the connection: trying again cannot help.
class AuthError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

struct Frame {
  FrameHeader header;
  std::vector<uint8_t> payload;
};

class Channel {
 public:
  Channel(boost::asio::ip::tcp::socket socket, std::string peer);

  void send(FrameType type, uint32_t flags, std::span<const uint8_t> payload);
  // Sends a payload made of `prefix` then the `data` runs, straight from where
  // they lie (one writev, no copy); `data_crc` is crc32c(0, data runs). The
  // data must not change until this returns.
  void send_gather(FrameType type, uint32_t flags, std::span<const uint8_t> prefix,
                   const std::vector<std::span<const uint8_t>>& data, uint64_t data_bytes, uint32_t data_crc);
  // Blocks for the next frame; throws ConnectionError when the peer is gone and
  // ProtocolError for a malformed frame.
  Frame receive();
  // The parts of receive(), for a receiver that places a payload itself
  // (page data straight into guest memory); it must then check the CRC.
  FrameHeader receive_header(std::array<uint8_t, kHeaderSize>& raw);
  void read_exact(std::span<uint8_t> out);
  void read_scatter(const std::vector<boost::asio::mutable_buffer>& bufs, size_t total);
  // A frame that takes longer than this to arrive, counted from when its
  // receive began (0: wait forever), fails with ConnectionError. Used for the
  // handshake (a peer that connects and says nothing, or half a frame, cannot
  // hang us) and during postcopy, where heartbeats keep an idle link talking.
  void set_receive_timeout(std::chrono::milliseconds timeout);
  // A peer that leaves sent data unacknowledged this long is gone: the kernel
  // aborts the connection (TCP_USER_TIMEOUT), so a blocked send fails too;
  // keepalive probes an idle one. Returns "" or what the kernel refused.
  std::string set_link_timeout(std::chrono::milliseconds timeout);
  // Waits, at most `limit`, until the kernel holds at most `bytes` of what
  // this side sent and the peer has not acknowledged (SIOCOUTQ). Returns
  // whether it got there. Lets a sender stop its guest only once the queue
  // in front of the next urgent frame is short.
  bool wait_sent(uint64_t bytes, std::chrono::milliseconds limit);
  // The kernel's view of this connection's bandwidth-delay product
  // (TCP_INFO: delivery rate × minimum RTT), in bytes; 0 when unknown.
  uint64_t bdp_estimate() const;
  // Marks this connection's packets DSCP EF (IP_TOS, IPV6_TCLASS) and gives
  // them socket priority 6 (TC_PRIO_INTERACTIVE), so a priority-aware qdisc
  // (pfifo_fast's band 0) or a DSCP-aware network sends them ahead of bulk
  // data. Returns "" or what the kernel refused.
  std::string mark_urgent();
  // Unblocks a receive() in another thread; later calls fail.
  void shutdown();

  // Runs the TLS handshake (as the server: the side that accepted); every
  // frame after it is encrypted. Throws ConnectionError saying why it failed.
  void start_tls(TlsConfig& config, bool server, std::chrono::milliseconds timeout);
  bool tls() const { return tls_ != nullptr; }
  std::string tls_cipher() const { return tls_ ? tls_->cipher() : ""; }
  // Before a TLS handshake: waits (at most `timeout`) for the peer's first
  // bytes and says whether they begin a plaintext migration frame, i.e. the
  // peer runs without a key.
  bool peer_sent_plaintext_frame(std::chrono::milliseconds timeout);

  const std::string& peer() const { return peer_; }
  // Read by other threads (progress, the report) while this one counts.
  uint64_t bytes_sent() const { return bytes_sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return bytes_received_.load(std::memory_order_relaxed); }

 private:
  template <typename Buffers>
  void write_frame(FrameType type, const Buffers& bufs, uint64_t bytes);
  // Reads exactly `total` bytes into `bufs`, within the current frame's deadline.
  template <typename Buffers>
  size_t read_all(const Buffers& bufs, size_t total, boost::system::error_code& ec);
  template <typename Buffers>
  size_t read_tls(const Buffers& bufs, boost::system::error_code& ec);

  boost::asio::ip::tcp::socket socket_;
  std::string peer_;
  std::unique_ptr<TlsStream> tls_;
  std::mutex send_mutex_;
  std::atomic<bool> shut_{false};  // shutdown() was called: a peek loop ends
  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::chrono::milliseconds receive_timeout_{0};
  std::chrono::steady_clock::time_point frame_deadline_{};  // of the frame being received
};

// "host:port" -> (host, port); throws vmm::Error when malformed.
std::pair<std::string, uint16_t> split_host_port(const std::string& s);

// Connects to host:port (TCP_NODELAY set), giving up after `timeout` (0: the
// kernel's own connect timeout).
std::unique_ptr<Channel> connect_channel(boost::asio::io_context& io, const std::string& host_port,
                                         std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

}  // namespace migration
