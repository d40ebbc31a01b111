// vmm: boot a PVH guest on KVM with its RAM in guest_memfd, memfd shmem or
// hugetlb; probe what this host can do for postcopy migration.
#include <cstdlib>
#include <exception>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"vmm: a postcopy live-migration VMM for guests on guest_memfd, memfd shmem and hugetlb"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}))
      ->capture_default_str();
  app.parse_complete_callback([&] {
    auto logger = spdlog::stderr_color_mt("vmm");
    logger->set_pattern("%^[%H:%M:%S.%e %l]%$ %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(spdlog::level::from_str(log_level));
  });
  vmm::cli::add_run_command(app);
  vmm::cli::add_receive_command(app);
  vmm::cli::add_migrate_command(app);
  vmm::cli::add_status_command(app);
  vmm::cli::add_caps_command(app);
  vmm::cli::add_conformance_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const vmm::cli::ExitCode& e) {
    return e.code;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return vmm::cli::kExitVmmError;
  }
  return 0;
}
