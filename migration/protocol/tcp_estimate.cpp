// Kept apart from Boost.Asio: the kernel's struct tcp_info (linux/tcp.h) has
// the delivery rate and minimum RTT, glibc's netinet/tcp.h copy does not,
// and the two headers cannot be included together.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace migration {

uint64_t tcp_bdp_estimate(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) < 0) return 0;
  if (len < offsetof(tcp_info, tcpi_min_rtt) + sizeof info.tcpi_min_rtt) return 0;  // an older kernel
  return info.tcpi_delivery_rate * info.tcpi_min_rtt / 1000000;
}

}  // namespace migration
