#include "serial_sink.h"

#include <cstdio>

#include <fmt/format.h>

#include "error.h"

namespace vmm::cli {

SerialSink make_serial_sink(const std::string& path) {
  std::FILE* out = stdout;
  if (!path.empty()) {
    out = std::fopen(path.c_str(), "w");
    if (!out) throw_errno(fmt::format("fopen({})", path), "check --serial-log");
  }
  std::shared_ptr<std::FILE> file(out, [](std::FILE* f) {
    if (f != stdout) std::fclose(f);
  });
  auto first = std::make_shared<std::optional<std::chrono::steady_clock::time_point>>();
  auto sink = [file, first](std::string_view line) {
    if (!*first) *first = std::chrono::steady_clock::now();
    std::fwrite(line.data(), 1, line.size(), file.get());
    std::fputc('\n', file.get());
    std::fflush(file.get());
  };
  return {sink, first};
}

}  // namespace vmm::cli
