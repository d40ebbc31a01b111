// The floors a postcopy fault is measured against, taken on this host in the
// same run as the migration they are compared with:
//   tcp_rtt_4k      8-byte request, 4 KiB response over TCP (Asio, TCP_NODELAY)
//   tcp_bulk        one-way bulk bandwidth over TCP, 4 MiB writes (mib_per_s)
// The TCP floors run over loopback, or against `baselines --serve HOST:PORT`
// named by $VMM_BASELINE_PEER (the lab runs them across a shaped link).
//   uffd_minor/B    a first touch of a page of backend B registered with
//                   userfaultfd MINOR, resolved by a handler thread with
//                   UFFDIO_CONTINUE: the local fault round trip
// Each reports p50_us and p99_us counters (Google Benchmark's own time is the mean).
#include <poll.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <atomic>
#include <chrono>
#include <thread>

#include <benchmark/benchmark.h>
#include <boost/asio/buffer.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <spdlog/spdlog.h>

#include "guest_memory.h"
#include "hugepages.h"
#include "userfaultfd.h"

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

void report(benchmark::State& state, std::vector<double>& us) {
  if (us.empty()) return;
  std::sort(us.begin(), us.end());
  state.counters["p50_us"] = us[us.size() / 2];
  state.counters["p99_us"] = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  state.counters["samples"] = static_cast<double>(us.size());
}

// One connection of the TCP floors' server: the first byte says which floor.
void serve_connection(tcp::socket& s) {
  s.set_option(tcp::no_delay(true));
  boost::system::error_code ec;
  uint8_t kind = 0;
  asio::read(s, asio::buffer(&kind, 1), ec);
  if (kind == 'R') {  // 8-byte request, 4 KiB response
    std::vector<uint8_t> req(8), resp(4096, 0x5a);
    while (!ec) {
      asio::read(s, asio::buffer(req), ec);
      if (!ec) asio::write(s, asio::buffer(resp), ec);
    }
  } else if (kind == 'B') {  // bulk sink
    std::vector<uint8_t> buf(4 << 20);
    while (!ec) s.read_some(asio::buffer(buf), ec);
  }
}

// A connection to the floors' server: $VMM_BASELINE_PEER (HOST:PORT, e.g.
// across a shaped link, where `baselines --serve` runs), else a server thread
// of this process on loopback.
class Peer {
 public:
  explicit Peer(char kind) : socket_(io_) {
    const char* peer = std::getenv("VMM_BASELINE_PEER");
    tcp::endpoint ep;
    if (peer && *peer) {
      std::string hp(peer);
      auto colon = hp.rfind(':');
      ep = tcp::endpoint(asio::ip::make_address(hp.substr(0, colon)),
                         static_cast<uint16_t>(std::stoi(hp.substr(colon + 1))));
    } else {
      acceptor_.emplace(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
      ep = acceptor_->local_endpoint();
      server_ = std::thread([this] {
        tcp::socket s(io_);
        acceptor_->accept(s);
        serve_connection(s);
      });
    }
    socket_.connect(ep);
    socket_.set_option(tcp::no_delay(true));
    asio::write(socket_, asio::buffer(&kind, 1));
  }
  ~Peer() {
    socket_.close();
    if (server_.joinable()) server_.join();
  }
  tcp::socket& socket() { return socket_; }

 private:
  asio::io_context io_;
  std::optional<tcp::acceptor> acceptor_;
  std::thread server_;
  tcp::socket socket_;
};

void tcp_rtt_4k(benchmark::State& state) {
  Peer peer('R');
  tcp::socket& c = peer.socket();
  std::vector<uint8_t> req(8, 1), resp(4096);
  std::vector<double> us;
  for (auto _ : state) {
    auto t0 = Clock::now();
    asio::write(c, asio::buffer(req));
    asio::read(c, asio::buffer(resp));
    double d = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    us.push_back(d);
    state.SetIterationTime(d / 1e6);
  }
  report(state, us);
}

// Bulk TCP bandwidth: 4 MiB writes, the size of a full Pages frame.
void tcp_bulk(benchmark::State& state) {
  Peer peer('B');
  tcp::socket& c = peer.socket();
  std::vector<uint8_t> block(4 << 20, 0x5a);
  auto t0 = Clock::now();
  size_t sent = 0;
  for (auto _ : state) {
    asio::write(c, asio::buffer(block));
    sent += block.size();
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  state.counters["mib_per_s"] = static_cast<double>(sent) / (1 << 20) / s;
}

void uffd_minor(benchmark::State& state, vmm::Backend backend, uint64_t pages) {
  uint64_t page = vmm::backend_page_size(backend);
  if (backend != vmm::Backend::Shmem && vmm::read_hugepage_pool(page).free < pages) {
    state.SkipWithError("not enough free hugepages (tools/bench-baselines.sh reserves them)");
    return;
  }
  auto mem = vmm::GuestMemory::create(backend, pages * page, nullptr);
  mem.populate();
  { vmm::Mapping alias = mem.map_alias(); std::fill_n(alias.data(), mem.size(), uint8_t{1}); }  // warm the pool
  vmm::Userfaultfd uffd(UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MINOR_HUGETLBFS);
  if (uffd.try_register(mem.primary(), mem.size(), UFFDIO_REGISTER_MODE_MINOR) < 0) {
    state.SkipWithError("UFFDIO_REGISTER(MINOR) failed");
    return;
  }
  std::atomic<bool> stop{false};
  std::thread handler([&] {
    uffd_msg msg;
    pollfd pfd{uffd.fd(), POLLIN, 0};
    while (!stop) {
      if (::poll(&pfd, 1, 100) <= 0) continue;
      if (::read(uffd.fd(), &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
      uffdio_continue c{};
      c.range.start = msg.arg.pagefault.address & ~(page - 1);
      c.range.len = page;
      ::ioctl(uffd.fd(), UFFDIO_CONTINUE, &c);
    }
  });
  std::vector<double> us;
  uint64_t next = 0;
  for (auto _ : state) {
    if (next == pages) {
      state.PauseTiming();
      ::madvise(mem.primary(), mem.size(), MADV_DONTNEED);  // unmap again: the next touches fault anew
      next = 0;
      state.ResumeTiming();
    }
    volatile uint8_t* p = mem.primary() + next++ * page;
    auto t0 = Clock::now();
    (void)*p;
    double d = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    us.push_back(d);
    state.SetIterationTime(d / 1e6);
  }
  stop = true;
  handler.join();
  report(state, us);
}

}  // namespace

// `baselines --serve HOST:PORT`: the far end of the TCP floors, one thread per
// connection, until killed. Anything else: Google Benchmark.
int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--serve") {
    std::string hp(argv[2]);
    auto colon = hp.rfind(':');
    asio::io_context io;
    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address(hp.substr(0, colon)),
                                             static_cast<uint16_t>(std::stoi(hp.substr(colon + 1)))));
    for (;;) {
      auto s = std::make_shared<tcp::socket>(io);
      acceptor.accept(*s);
      std::thread([s] { serve_connection(*s); }).detach();
    }
  }
  spdlog::set_level(spdlog::level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

BENCHMARK(tcp_rtt_4k)->UseManualTime()->Iterations(4000)->Unit(benchmark::kMicrosecond);
BENCHMARK(tcp_bulk)->Iterations(128)->Unit(benchmark::kMillisecond);  // 512 MiB
BENCHMARK_CAPTURE(uffd_minor, shmem, vmm::Backend::Shmem, 4096)
    ->UseManualTime()->Iterations(4000)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(uffd_minor, hugetlb_2m, vmm::Backend::Hugetlb2M, 32)
    ->UseManualTime()->Iterations(256)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(uffd_minor, hugetlb_1g, vmm::Backend::Hugetlb1G, 1)
    ->UseManualTime()->Iterations(16)->Unit(benchmark::kMicrosecond);
