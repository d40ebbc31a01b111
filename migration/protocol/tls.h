// TLS 1.3 with a pre-shared key for the migration connections (OpenSSL
// through Boost.Asio's ssl::stream). Both hosts hold the same key file; a
// peer without it, or with another key, fails the handshake. The cipher is
// TLS_AES_128_GCM_SHA256 with an (EC)DHE exchange beside the key (psk_dhe_ke),
// so a key that leaks later does not open recorded streams.
//
// A Channel owns one TlsStream once its handshake is done. Sends come from
// several threads and one thread receives: every TLS operation runs under one
// lock, and a receive never waits for data while holding it (the socket is
// read without blocking, and the receiver polls outside the lock).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace migration {

// The key and the contexts made from it, shared by every connection of a
// process. Throws vmm::Error for a file that cannot be read or holds no key.
class TlsConfig {
 public:
  static std::shared_ptr<TlsConfig> from_file(const std::string& path);
  // From the key bytes themselves (tests, fuzzing).
  static std::shared_ptr<TlsConfig> from_key(std::vector<uint8_t> key);

  boost::asio::ssl::context& client() { return client_; }
  boost::asio::ssl::context& server() { return server_; }
  const std::vector<uint8_t>& key() const { return key_; }

 private:
  explicit TlsConfig(std::vector<uint8_t> key);
  std::vector<uint8_t> key_;
  boost::asio::ssl::context client_, server_;
};

// Parses the key file's text: hex digits (at least 32, i.e. 16 bytes, at
// most 512), optionally surrounded by white space. Throws vmm::Error.
std::vector<uint8_t> parse_psk_text(const std::string& text, const std::string& path);

// The transport under Asio's ssl::stream: the TCP socket read without blocking
// once the handshake is done (would_block when nothing is there), and until
// then within the handshake's deadline; writes block. Only the error-code
// forms: Asio's synchronous TLS operations use nothing else.
class TlsSocket {
 public:
  using lowest_layer_type = boost::asio::ip::tcp::socket::lowest_layer_type;
  using executor_type = boost::asio::ip::tcp::socket::executor_type;

  explicit TlsSocket(boost::asio::ip::tcp::socket& s) : socket_(s) {}
  lowest_layer_type& lowest_layer() { return socket_.lowest_layer(); }
  const lowest_layer_type& lowest_layer() const { return socket_.lowest_layer(); }
  executor_type get_executor() { return socket_.get_executor(); }

  template <typename MutableBuffers>
  size_t read_some(const MutableBuffers& b, boost::system::error_code& ec) {
    return read_one(*boost::asio::buffer_sequence_begin(b), ec);
  }
  template <typename ConstBuffers>
  size_t write_some(const ConstBuffers& b, boost::system::error_code& ec) {
    return write_one(*boost::asio::buffer_sequence_begin(b), ec);
  }

  // Until the handshake is done, reads wait for data until `deadline`.
  void set_handshake_deadline(std::chrono::steady_clock::time_point deadline) {
    handshake_ = true;
    deadline_ = deadline;
  }
  void end_handshake() { handshake_ = false; }

 private:
  size_t read_one(boost::asio::mutable_buffer b, boost::system::error_code& ec);
  size_t write_one(boost::asio::const_buffer b, boost::system::error_code& ec);

  boost::asio::ip::tcp::socket& socket_;
  bool handshake_ = false;
  std::chrono::steady_clock::time_point deadline_{};
};

class TlsStream {
 public:
  TlsStream(boost::asio::ip::tcp::socket& socket, TlsConfig& config, bool server);

  // Runs the handshake; throws ConnectionError saying why it failed (another
  // key, a peer that does not speak TLS, a closed connection, the deadline).
  void handshake(std::chrono::steady_clock::time_point deadline, const std::string& peer);
  // Writes every byte of `bufs`, in order, under the lock.
  void write(const std::vector<boost::asio::const_buffer>& bufs, boost::system::error_code& ec);
  // What is there now, at most `b.size()` bytes: 0 with would_block when the
  // socket has nothing yet (poll it, then call again), eof when the peer closed.
  size_t read_some(boost::asio::mutable_buffer b, boost::system::error_code& ec);
  // The cipher suite agreed, e.g. "TLS_AES_128_GCM_SHA256".
  std::string cipher() const;

 private:
  std::mutex mutex_;
  boost::asio::ssl::stream<TlsSocket> stream_;
  bool server_;
  std::vector<uint8_t> staging_;  // small pieces gathered into one record
};

// Whether this kernel can take TLS records off user space (kTLS), as a line
// for the log: what was probed and what was found.
std::string ktls_probe();

// A clear reason for a handshake error, naming the likely cause.
std::string describe_tls_error(const boost::system::error_code& ec, bool server);

}  // namespace migration
