#include "tls.h"

#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "channel.h"
#include "error.h"

namespace migration {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

namespace {

// Both sides name the key the same way; one key per pair of hosts.
constexpr char kIdentity[] = "gmem-postcopy-vmm migration key";
constexpr unsigned char kAes128GcmSha256[] = {0x13, 0x01};

// Where a context keeps its TlsConfig (Asio keeps its own callback in the
// context's app data).
int config_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

const std::vector<uint8_t>& key_of(SSL* s) {
  return static_cast<TlsConfig*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), config_index()))->key();
}

SSL_SESSION* psk_session(SSL* s) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(s, kAes128GcmSha256);
  if (!cipher) return nullptr;
  SSL_SESSION* sess = SSL_SESSION_new();
  const auto& key = key_of(s);
  if (!sess || !SSL_SESSION_set1_master_key(sess, key.data(), key.size()) || !SSL_SESSION_set_cipher(sess, cipher) ||
      !SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION)) {
    SSL_SESSION_free(sess);
    return nullptr;
  }
  return sess;
}

int use_session(SSL* s, const EVP_MD* md, const unsigned char** id, size_t* idlen, SSL_SESSION** sess) {
  *sess = psk_session(s);
  if (!*sess) return 0;
  if (md && SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(*sess)) != md) {
    SSL_SESSION_free(*sess);  // a retry asked for another hash: this key does not fit it
    *sess = nullptr;
    *id = nullptr;
    *idlen = 0;
    return 1;
  }
  *id = reinterpret_cast<const unsigned char*>(kIdentity);
  *idlen = sizeof kIdentity - 1;
  return 1;
}

int find_session(SSL* s, const unsigned char* id, size_t idlen, SSL_SESSION** sess) {
  *sess = nullptr;
  if (idlen != sizeof kIdentity - 1 || std::memcmp(id, kIdentity, idlen) != 0) return 1;  // not ours: no PSK
  *sess = psk_session(s);
  return *sess ? 1 : 0;
}

void configure(ssl::context& ctx, TlsConfig* owner, bool server) {
  SSL_CTX* c = ctx.native_handle();
  SSL_CTX_set_ex_data(c, config_index(), owner);
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256");
  // No resumption: every connection proves the key again, and no ticket
  // arrives after the handshake.
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (server) {
    SSL_CTX_set_num_tickets(c, 0);
    SSL_CTX_set_psk_find_session_callback(c, find_session);
  } else {
    SSL_CTX_set_psk_use_session_callback(c, use_session);
    // A server that answers our key with a certificate instead does not hold
    // the key: refuse every certificate, so no certificate handshake completes.
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, [](int, X509_STORE_CTX*) { return 0; });
  }
}

}  // namespace

std::vector<uint8_t> parse_psk_text(const std::string& text, const std::string& path) {
  std::string hex;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    if (!std::isxdigit(static_cast<unsigned char>(c)))
      throw vmm::Error(fmt::format("{}: the key must be hex digits (e.g. the output of `openssl rand -hex 32`); "
                                   "found '{}'", path, c));
    hex += c;
  }
  if (hex.size() % 2) throw vmm::Error(fmt::format("{}: the key has an odd number of hex digits", path));
  if (hex.size() < 32 || hex.size() > 512)
    throw vmm::Error(fmt::format("{}: the key is {} bytes; it must be 16 to 256 bytes (`openssl rand -hex 32` "
                                 "makes one of 32)", path, hex.size() / 2));
  std::vector<uint8_t> key(hex.size() / 2);
  for (size_t i = 0; i < key.size(); i++) key[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return key;
}

TlsConfig::TlsConfig(std::vector<uint8_t> key)
    : key_(std::move(key)), client_(ssl::context::tls_client), server_(ssl::context::tls_server) {
  configure(client_, this, false);
  configure(server_, this, true);
}

std::shared_ptr<TlsConfig> TlsConfig::from_key(std::vector<uint8_t> key) {
  return std::shared_ptr<TlsConfig>(new TlsConfig(std::move(key)));
}

std::shared_ptr<TlsConfig> TlsConfig::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw vmm::Error(fmt::format("cannot read the key file {}: {}", path, vmm::describe_errno(errno)));
  // A key is at most 512 hex digits: read no more than a few KiB of whatever
  // the path names (/dev/zero, a large file).
  constexpr size_t kMaxKeyFile = 4096;
  std::string text(kMaxKeyFile + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxKeyFile)
    throw vmm::Error(fmt::format("{}: more than {} bytes: not a key file (a key is at most 512 hex digits)", path,
                                 kMaxKeyFile));
  auto cfg = from_key(parse_psk_text(text, path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077))
    spdlog::warn("the key file {} can be read by other users (mode {:o}): chmod 600 it", path, st.st_mode & 0777);
  return cfg;
}

size_t TlsSocket::read_one(asio::mutable_buffer b, boost::system::error_code& ec) {
  int fd = socket_.native_handle();
  for (;;) {
    ssize_t n = ::recv(fd, b.data(), b.size(), MSG_DONTWAIT);
    if (n > 0) {
      ec = {};
      return static_cast<size_t>(n);
    }
    if (n == 0) {
      ec = asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      ec = boost::system::error_code(errno, boost::system::system_category());
      return 0;
    }
    if (!handshake_) {
      ec = asio::error::would_block;
      return 0;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - std::chrono::steady_clock::now());
    pollfd pfd{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) == 0) {
      ec = asio::error::timed_out;
      return 0;
    }
  }
}

size_t TlsSocket::write_one(asio::const_buffer b, boost::system::error_code& ec) {
  for (;;) {
    ssize_t n = ::send(socket_.native_handle(), b.data(), b.size(), MSG_NOSIGNAL);
    if (n >= 0) {
      ec = {};
      return static_cast<size_t>(n);
    }
    if (errno == EINTR) continue;
    ec = boost::system::error_code(errno, boost::system::system_category());
    return 0;
  }
}

TlsStream::TlsStream(asio::ip::tcp::socket& socket, TlsConfig& config, bool server)
    : stream_(TlsSocket(socket), server ? config.server() : config.client()), server_(server) {}

std::string describe_tls_error(const boost::system::error_code& ec, bool server) {
  std::string what = ec.message();
  if (ec == asio::error::eof || ec == ssl::error::stream_truncated || ec == asio::error::connection_reset)
    return server ? "the source closed the connection during the TLS handshake"
                  : "the destination closed the connection during the TLS handshake (does it run without "
                    "--psk-file, or has it refused this connection?)";
  if (ec == asio::error::timed_out) return "the TLS handshake did not finish in time";
  if (what.find("binder does not verify") != std::string::npos || what.find("decrypt error") != std::string::npos ||
      what.find("illegal parameter") != std::string::npos)
    return fmt::format("{}: the peer holds another key (--psk-file differs)", what);
  if (what.find("wrong version number") != std::string::npos || what.find("packet length too long") != std::string::npos ||
      what.find("record layer failure") != std::string::npos)
    return fmt::format("{}: the peer does not speak TLS (it runs without --psk-file)", what);
  if (what.find("certificate verify failed") != std::string::npos)
    return fmt::format("{}: the peer answered with a certificate instead of the pre-shared key, so it does not hold "
                       "the key (--psk-file)",
                       what);
  if (what.find("handshake failure") != std::string::npos || what.find("no suitable") != std::string::npos ||
      what.find("no shared cipher") != std::string::npos)
    return fmt::format("{}: the peer offered no key we know (--psk-file differs or is missing)", what);
  return what;
}

void TlsStream::handshake(std::chrono::steady_clock::time_point deadline, const std::string& peer) {
  std::lock_guard lock(mutex_);
  stream_.next_layer().set_handshake_deadline(deadline);
  boost::system::error_code ec;
  stream_.handshake(server_ ? ssl::stream_base::server : ssl::stream_base::client, ec);
  stream_.next_layer().end_handshake();
  if (ec) {
    std::string what = fmt::format("TLS handshake with {} failed: {}", peer, describe_tls_error(ec, server_));
    bool connection = ec == asio::error::eof || ec == ssl::error::stream_truncated ||
                      ec == asio::error::connection_reset || ec == asio::error::timed_out ||
                      ec.category() == boost::system::system_category();
    if (connection) throw ConnectionError(what);
    throw AuthError(what);
  }
  // In TLS 1.3 an external PSK is a "resumed" session: anything else was
  // authenticated some other way, or not at all, and carries no frame.
  if (!SSL_session_reused(stream_.native_handle()))
    throw AuthError(fmt::format("TLS handshake with {} completed without the pre-shared key: the peer does "
                                      "not hold it; refused before any frame",
                                      peer));
}

// In records of up to 16 KiB gathered from the pieces (a frame of 4 KiB pages
// would otherwise be a record, and a send(), per page).
void TlsStream::write(const std::vector<asio::const_buffer>& bufs, boost::system::error_code& ec) {
  constexpr size_t kRecord = 16384;
  std::lock_guard lock(mutex_);
  staging_.resize(kRecord);
  size_t held = 0;
  auto flush = [&] {
    if (held && !ec) asio::write(stream_, asio::buffer(staging_.data(), held), ec);
    held = 0;
  };
  for (auto b : bufs) {
    while (b.size() && !ec) {
      if (held == 0 && b.size() >= kRecord) {  // whole records straight from where the data lies
        size_t n = b.size() - b.size() % kRecord;
        asio::write(stream_, asio::buffer(b.data(), n), ec);
        b += n;
        continue;
      }
      size_t n = std::min(b.size(), kRecord - held);
      std::memcpy(staging_.data() + held, b.data(), n);
      held += n;
      b += n;
      if (held == kRecord) flush();
    }
  }
  flush();
}

size_t TlsStream::read_some(asio::mutable_buffer b, boost::system::error_code& ec) {
  std::lock_guard lock(mutex_);
  size_t n = stream_.read_some(b, ec);
  if (ec == ssl::error::stream_truncated) ec = asio::error::eof;
  return n;
}

std::string TlsStream::cipher() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(const_cast<ssl::stream<TlsSocket>&>(stream_).native_handle());
  return c ? SSL_CIPHER_get_name(c) : "none";
}

std::string ktls_probe() {
  std::ifstream ulp("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string names;
  std::getline(ulp, names);
  if ((" " + names + " ").find(" tls ") != std::string::npos)
    return "the kernel offers TLS offload (TCP_ULP \"tls\" in tcp_available_ulp), but this build keeps TLS in user "
           "space (OpenSSL through Asio)";
  utsname u{};
  ::uname(&u);
  for (const char* ext : {".ko", ".ko.xz", ".ko.zst", ".ko.gz"})
    if (std::filesystem::exists(fmt::format("/lib/modules/{}/kernel/net/tls/tls{}", u.release, ext)))
      return "the kernel's TLS offload is a module not loaded (modprobe tls); TLS runs in user space (OpenSSL)";
  return "this kernel has no TLS offload (no \"tls\" in /proc/sys/net/ipv4/tcp_available_ulp, no tls module: "
         "CONFIG_TLS is off); TLS runs in user space (OpenSSL through Asio)";
}

}  // namespace migration
