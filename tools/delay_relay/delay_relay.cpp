// A TCP relay that adds a fixed one-way delay in each direction, for links
// where the kernel lacks sch_netem (this project's reference host does).
//   delay_relay --listen 10.213.0.2:5555 --to 127.0.0.1:4444 --delay-ms 5
// Every accepted connection gets its own upstream connection; bytes read on
// one side are written to the other `delay-ms` later, in order.
// It stands in for a wire, which never waits for a CPU: its threads run
// SCHED_FIFO where allowed. At normal priority, on two cores beside a
// migration, a 4 KiB answer crossing it took about 1 ms more than the delay.
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include <sched.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Chunk {
  Clock::time_point due;
  std::vector<uint8_t> data;  // empty: the reading side closed
};

// One direction: a reader queues what it reads, a writer sends it when due.
void pump(tcp::socket& from, tcp::socket& to, std::chrono::microseconds delay) {
  std::mutex m;
  std::condition_variable cv;
  std::deque<Chunk> queue;
  std::thread writer([&] {
    for (;;) {
      Chunk c;
      {
        std::unique_lock lock(m);
        cv.wait(lock, [&] { return !queue.empty(); });
        c = std::move(queue.front());
        queue.pop_front();
      }
      std::this_thread::sleep_until(c.due);
      boost::system::error_code ec;
      if (c.data.empty() || (asio::write(to, asio::buffer(c.data), ec), ec)) {
        to.shutdown(tcp::socket::shutdown_send, ec);
        return;
      }
    }
  });
  std::vector<uint8_t> buf(256 * 1024);
  for (;;) {
    boost::system::error_code ec;
    size_t n = from.read_some(asio::buffer(buf), ec);
    Chunk c{Clock::now() + delay, {}};
    if (!ec) c.data.assign(buf.begin(), buf.begin() + static_cast<long>(n));
    {
      std::lock_guard lock(m);
      queue.push_back(std::move(c));
    }
    cv.notify_one();
    if (ec) break;
  }
  writer.join();
}

tcp::endpoint parse_endpoint(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("'" + s + "' is not HOST:PORT");
  return {asio::ip::make_address(s.substr(0, colon)), static_cast<uint16_t>(std::stoul(s.substr(colon + 1)))};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"delay_relay: forward TCP connections, adding a one-way delay in each direction"};
  std::string listen, to;
  double delay_ms = 0;
  app.add_option("--listen", listen, "HOST:PORT to accept on")->required();
  app.add_option("--to", to, "HOST:PORT to forward each connection to")->required();
  app.add_option("--delay-ms", delay_ms, "One-way delay added in each direction (RTT/2)")
      ->check(CLI::Range(0.0, 10000.0))
      ->required();
  CLI11_PARSE(app, argc, argv);
  try {
    asio::io_context io;
    tcp::acceptor acceptor(io, parse_endpoint(listen));
    auto delay = std::chrono::microseconds(static_cast<int64_t>(delay_ms * 1000));
    sched_param sp{};
    sp.sched_priority = 20;
    bool rt = ::sched_setscheduler(0, SCHED_FIFO, &sp) == 0;  // threads started later inherit it
    spdlog::info("delay_relay: {} -> {} with {} ms each way, threads {}", listen, to, delay_ms,
                 rt ? "SCHED_FIFO 20" : "at normal priority (SCHED_FIFO refused)");
    for (;;) {
      auto down = std::make_shared<tcp::socket>(io);
      acceptor.accept(*down);
      auto up = std::make_shared<tcp::socket>(io);
      up->connect(parse_endpoint(to));
      down->set_option(tcp::no_delay(true));
      up->set_option(tcp::no_delay(true));
      std::thread([down, up, delay] { pump(*down, *up, delay); }).detach();
      std::thread([down, up, delay] { pump(*up, *down, delay); }).detach();
    }
  } catch (const std::exception& e) {
    spdlog::error("delay_relay: {}", e.what());
    return 1;
  }
}
