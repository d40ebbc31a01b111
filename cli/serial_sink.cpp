#include "serial_sink.h"

#include <cstdio>

#include <fmt/format.h>

#include "error.h"

namespace vmm::cli {

SerialSink make_serial_sink(const std::string& path, const std::string& watch) {
  std::FILE* out = stdout;
  if (!path.empty()) {
    out = std::fopen(path.c_str(), "w");
    if (!out) throw_errno(fmt::format("fopen({})", path), "check --serial-log");
  }
  std::shared_ptr<std::FILE> file(out, [](std::FILE* f) {
    if (f != stdout) std::fclose(f);
  });
  auto first = std::make_shared<std::optional<std::chrono::steady_clock::time_point>>();
  auto watched = std::make_shared<std::atomic<SerialSink::TimePoint::rep>>(0);
  auto sink = [file, first, watched, watch](std::string_view line) {
    auto now = std::chrono::steady_clock::now();
    if (!*first) *first = now;
    if (!watch.empty() && watched->load() == 0 && line.find(watch) != std::string_view::npos)
      watched->store(now.time_since_epoch().count());
    std::fwrite(line.data(), 1, line.size(), file.get());
    std::fputc('\n', file.get());
    std::fflush(file.get());
  };
  return {sink, first, watched};
}

}  // namespace vmm::cli
