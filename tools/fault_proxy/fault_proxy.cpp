// A TCP proxy that breaks the link on cue, for the link-recovery tests.
//   fault_proxy --listen 127.0.0.1:5555 --to 127.0.0.1:4444 --fault reset@1:8M --fault blackhole@3:8M
// Accepted connections are numbered from 1 in order (a migration opens its
// main connection, then its urgent one; a reconnection opens the next two).
// A fault KIND@CONN:BYTES fires once connection CONN has carried BYTES
// towards the destination (K, M, G suffixes), and hits every connection open
// at that moment. CONN may name several, 1+2: whichever of them carries
// BYTES first (for data that may take either of a migration's connections).
//   reset      both ends get a TCP reset (SO_LINGER 0, then close)
//   blackhole  nothing more is forwarded either way, and nothing is closed:
//              a partition, as a peer sees it. Later connections pass, or,
//              with blackhole@CONN:BYTES:SECONDS, only those accepted once the
//              partition has lasted SECONDS (earlier ones are held silent too).
// KIND@CONN:back:FRAME fires instead at a frame boundary of what CONN carries
// back toward the source: just before the first frame of type FRAME (a name
// from migration/protocol/wire.h: Started, Complete, Received, ...), which then never
// arrives. KIND@CONN:fwd:FRAME does the same toward the destination
// (StartedAck, CompleteAck, ...). Such a direction is read frame by frame;
// where it holds no frames (TLS) the fault cannot fire, and the proxy says so.
// Each fault prints one line on stderr when it fires.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "wire.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

struct Fault {
  enum Kind { Reset, Blackhole } kind;
  std::vector<unsigned> conns;
  uint64_t bytes;
  double heal_s = 0;
  std::string frame;  // back:FRAME / fwd:FRAME: fires before that frame
  bool frame_to_dst = false;  // fwd: toward the destination
  bool fired = false;
  bool on(unsigned id) const { return std::find(conns.begin(), conns.end(), id) != conns.end(); }
};

using Clock = std::chrono::steady_clock;
Clock::time_point g_partition_until{};  // connections accepted before this are held silent

struct Conn {
  unsigned id;
  tcp::socket down, up;
  std::atomic<uint64_t> to_dst{0};
  std::atomic<bool> frozen{false}, reset{false};
  Conn(unsigned i, tcp::socket d, tcp::socket u) : id(i), down(std::move(d)), up(std::move(u)) {}
};

std::mutex g_mutex;
std::ofstream g_record;  // --record: the bytes toward --to
std::condition_variable g_cv;  // wakes frozen pumps never; closed ones on reset
std::vector<Fault> g_faults;
std::vector<std::weak_ptr<Conn>> g_conns;

// SO_LINGER 0 makes the close a reset; shutdown() wakes the pumps blocked on
// the socket now. The close itself comes when the last pump lets go of it.
void hard_reset(tcp::socket& s) {
  boost::system::error_code ec;
  s.set_option(asio::socket_base::linger(true, 0), ec);
  ::shutdown(s.native_handle(), SHUT_RDWR);
}

// Under g_mutex: fires `f`, reached on `c` at `where`.
void fire(Fault& f, const Conn& c, const std::string& where) {
  f.fired = true;
  if (f.kind == Fault::Blackhole && f.heal_s > 0)
    g_partition_until = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(f.heal_s * 1000));
  unsigned hit = 0;
  for (auto& w : g_conns) {
    auto o = w.lock();
    if (!o || o->reset) continue;
    hit++;
    if (f.kind == Fault::Blackhole) {
      o->frozen = true;
      continue;
    }
    o->reset = true;
    hard_reset(o->down);
    hard_reset(o->up);
  }
  spdlog::info("fault_proxy: {} {} of connection {} ({} connections hit)",
               f.kind == Fault::Reset ? "reset" : "blackhole", where, c.id, hit);
  g_cv.notify_all();
}

// Under g_mutex: fires the byte-count faults that `c` has reached.
void check_faults(const Conn& c) {
  for (auto& f : g_faults)
    if (!f.fired && f.frame.empty() && f.on(c.id) && c.to_dst >= f.bytes)
      fire(f, c, fmt::format("at {} bytes", c.to_dst.load()));
}

bool has_frame_fault(unsigned id, bool to_dst) {
  std::lock_guard lock(g_mutex);
  return std::any_of(g_faults.begin(), g_faults.end(),
                     [&](const Fault& f) { return !f.frame.empty() && f.frame_to_dst == to_dst && f.on(id); });
}

// One direction, frame by frame: each header is held until it is whole, so
// that a fault on its type fires before any byte of it crosses.
void pump_frames(const std::shared_ptr<Conn>& c, bool to_dst) {
  tcp::socket& from = to_dst ? c->down : c->up;
  tcp::socket& to = to_dst ? c->up : c->down;
  const char* toward = to_dst ? "toward the destination" : "toward the source";
  auto forwarded = [&](const uint8_t* p, size_t k) {
    if (!to_dst) return;
    std::lock_guard lock(g_mutex);
    if (g_record) g_record.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(k));
    c->to_dst += k;
  };
  std::vector<uint8_t> buf(64 * 1024), head;
  uint64_t left = 0;  // payload bytes of the current frame still to forward
  bool frames = true;
  boost::system::error_code ec;
  while (!ec) {
    if (c->frozen) {
      std::unique_lock lock(g_mutex);
      g_cv.wait(lock, [&] { return c->reset.load(); });
      return;
    }
    size_t n = from.read_some(asio::buffer(buf), ec);
    if (c->frozen) continue;
    if (ec || c->reset) break;
    for (size_t off = 0; off < n && !ec && !c->frozen && !c->reset;) {
      if (!frames || left > 0) {
        size_t k = frames ? std::min<uint64_t>(left, n - off) : n - off;
        asio::write(to, asio::buffer(buf.data() + off, k), ec);
        forwarded(buf.data() + off, k);
        left -= frames ? k : 0;
        off += k;
        continue;
      }
      size_t k = std::min(migration::kHeaderSize - head.size(), n - off);
      head.insert(head.end(), buf.begin() + static_cast<long>(off), buf.begin() + static_cast<long>(off + k));
      off += k;
      if (head.size() < migration::kHeaderSize) continue;
      try {
        auto h = migration::decode_header(std::span<const uint8_t, migration::kHeaderSize>(head.data(), head.size()));
        std::lock_guard lock(g_mutex);
        for (auto& f : g_faults)
          if (!f.fired && f.on(c->id) && f.frame_to_dst == to_dst && f.frame == migration::frame_type_name(h.type))
            fire(f, *c, fmt::format("at the boundary before a {} frame {}", f.frame, toward));
        left = h.length;
      } catch (const migration::ProtocolError& e) {
        spdlog::warn("fault_proxy: connection {} carries no frames {} ({}): its frame faults cannot fire", c->id,
                     toward, e.what());
        frames = false;
      }
      if (c->frozen || c->reset) break;
      asio::write(to, asio::buffer(head), ec);
      forwarded(head.data(), head.size());
      head.clear();
    }
    if (c->reset) return;
  }
  to.shutdown(tcp::socket::shutdown_send, ec);
}

void pump(const std::shared_ptr<Conn>& c, bool towards_dst) {
  tcp::socket& from = towards_dst ? c->down : c->up;
  tcp::socket& to = towards_dst ? c->up : c->down;
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    if (c->frozen) {  // a partition: hold everything, forever
      std::unique_lock lock(g_mutex);
      g_cv.wait(lock, [&] { return c->reset.load(); });
      return;
    }
    boost::system::error_code ec;
    size_t n = from.read_some(asio::buffer(buf), ec);
    if (c->frozen) continue;  // not even a close crosses a partition
    if (ec || c->reset) break;
    // Forward in pieces that end where a pending fault fires.
    for (size_t off = 0; off < n && !c->frozen && !c->reset;) {
      size_t send = n - off;
      if (towards_dst) {
        std::lock_guard lock(g_mutex);
        for (const auto& f : g_faults)
          if (!f.fired && f.frame.empty() && f.on(c->id) && f.bytes >= c->to_dst)
            send = std::min<uint64_t>(send, f.bytes - c->to_dst);
      }
      asio::write(to, asio::buffer(buf.data() + off, send), ec);
      if (ec) break;
      if (towards_dst) {
        std::lock_guard lock(g_mutex);
        if (g_record) g_record.write(reinterpret_cast<const char*>(buf.data() + off), static_cast<std::streamsize>(send));
      }
      off += send;
      if (towards_dst) {
        std::lock_guard lock(g_mutex);
        c->to_dst += send;
        check_faults(*c);
      }
    }
    if (c->reset) return;
    if (ec) break;
  }
  boost::system::error_code ec;
  to.shutdown(tcp::socket::shutdown_send, ec);
}

tcp::endpoint parse_endpoint(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("'" + s + "' is not HOST:PORT");
  return {asio::ip::make_address(s.substr(0, colon)), static_cast<uint16_t>(std::stoul(s.substr(colon + 1)))};
}

Fault parse_fault(const std::string& s) {
  auto at = s.find('@'), colon = s.find(':', at);
  if (at == std::string::npos || colon == std::string::npos)
    throw std::runtime_error("fault '" + s + "' is not KIND@CONN:BYTES");
  std::string kind = s.substr(0, at), bytes = s.substr(colon + 1), heal;
  if (auto c2 = bytes.find(':'); c2 != std::string::npos) heal = bytes.substr(c2 + 1), bytes = bytes.substr(0, c2);
  Fault f{};
  if (kind == "reset") f.kind = Fault::Reset;
  else if (kind == "blackhole") f.kind = Fault::Blackhole;
  else throw std::runtime_error("fault kind '" + kind + "' is not reset or blackhole");
  std::string conns = s.substr(at + 1, colon - at - 1);
  for (size_t from = 0; from <= conns.size();) {
    size_t plus = std::min(conns.find('+', from), conns.size());
    f.conns.push_back(static_cast<unsigned>(std::stoul(conns.substr(from, plus - from))));
    from = plus + 1;
  }
  if (bytes == "back" || bytes == "fwd") {
    f.frame_to_dst = bytes == "fwd";
    for (uint16_t t = 1; t <= migration::kMaxFrameType; t++)
      if (heal == migration::frame_type_name(static_cast<migration::FrameType>(t))) f.frame = heal;
    if (f.frame.empty()) throw std::runtime_error("fault '" + s + "': '" + heal + "' is not a frame type");
    return f;
  }
  uint64_t mult = 1;
  char suffix = bytes.empty() ? 0 : bytes.back();
  if (suffix == 'K' || suffix == 'M' || suffix == 'G') {
    mult = suffix == 'K' ? 1ULL << 10 : suffix == 'M' ? 1ULL << 20 : 1ULL << 30;
    bytes.pop_back();
  }
  f.bytes = std::stoull(bytes) * mult;
  if (!heal.empty()) {
    if (f.kind != Fault::Blackhole) throw std::runtime_error("only a blackhole takes :SECONDS");
    f.heal_s = std::stod(heal);
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fault_proxy: forward TCP connections and reset or blackhole them on cue"};
  std::string listen, to;
  std::vector<std::string> faults;
  app.add_option("--listen", listen, "HOST:PORT to accept on")->required();
  app.add_option("--to", to, "HOST:PORT to forward each connection to")->required();
  app.add_option("--fault", faults, "KIND@CONN:BYTES, KIND@CONN:back:FRAME or KIND@CONN:fwd:FRAME, KIND reset or blackhole, CONN a number or several as "
                 "1+2 (repeatable)");
  std::string record;
  app.add_option("--record", record, "Write every byte forwarded toward --to here (all connections, in order)");
  CLI11_PARSE(app, argc, argv);
  if (!record.empty()) {
    g_record.open(record, std::ios::binary | std::ios::trunc);
    if (!g_record) {
      spdlog::error("fault_proxy: cannot write {}", record);
      return 1;
    }
  }
  try {
    for (const auto& f : faults) g_faults.push_back(parse_fault(f));
    asio::io_context io;
    tcp::acceptor acceptor(io, parse_endpoint(listen));
    spdlog::info("fault_proxy: {} -> {}, {} faults armed", listen, to, g_faults.size());
    for (unsigned id = 1;; id++) {
      tcp::socket down(io);
      acceptor.accept(down);
      tcp::socket up(io);
      boost::system::error_code ec;
      up.connect(parse_endpoint(to), ec);
      if (ec) {
        spdlog::warn("fault_proxy: connection {}: cannot reach {}: {}", id, to, ec.message());
        continue;
      }
      down.set_option(tcp::no_delay(true));
      up.set_option(tcp::no_delay(true));
      auto c = std::make_shared<Conn>(id, std::move(down), std::move(up));
      {
        std::lock_guard lock(g_mutex);
        g_conns.push_back(c);
        if (Clock::now() < g_partition_until) {
          c->frozen = true;
          spdlog::info("fault_proxy: connection {} held silent: the partition lasts", id);
        }
      }
      for (bool to_dst : {true, false}) {
        if (has_frame_fault(id, to_dst)) std::thread([c, to_dst] { pump_frames(c, to_dst); }).detach();
        else std::thread([c, to_dst] { pump(c, to_dst); }).detach();
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("fault_proxy: {}", e.what());
    return 1;
  }
}
