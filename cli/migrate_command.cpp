// vmm migrate: ask a running `vmm run --api-socket PATH` to migrate its guest.
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include "api_server.h"
#include "commands.h"

namespace vmm::cli {

namespace {

struct MigrateOptions {
  std::string api_socket;
  std::string to;
  std::string mode = "hybrid";
  uint32_t precopy_rounds = 0;
  double push_rate_mib = 0;
  LinkTimeouts link;
  std::string psk_file;
};

void run(const MigrateOptions& o) {
  // The running VMM reads the key file itself, from its own working directory.
  std::string psk = o.psk_file.empty() ? "" : std::filesystem::absolute(o.psk_file).string();
  nlohmann::json reply = api_call(o.api_socket, {{"command", "migrate"},
                                                 {"psk_file", psk},
                                                 {"to", o.to},
                                                 {"mode", o.mode},
                                                 {"precopy_rounds", o.precopy_rounds},
                                                 {"postcopy_push_rate_mib", o.push_rate_mib},
                                                 {"link_timeout_s", o.link.link_s},
                                                 {"recovery_timeout_s", o.link.recovery_s},
                                                 {"connect_timeout_s", o.link.connect_s}});
  std::cout << reply.dump(2) << "\n";
  if (!reply.value("ok", false)) {
    std::cerr << "migrate: " << reply.value("error", std::string("failed")) << "\n";
    throw ExitCode{1};
  }
}

}  // namespace

void add_status_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("status", "Ask a running `vmm run --api-socket PATH` what its migration is doing");
  cmd->footer(
      "Prints JSON: phase (idle, connecting, precopy, switchover, postcopy, paused while a lost link is\n"
      "redialed, completed, failed, resumed_here), link_pauses and link_resumes so far. Answered at once, also\n"
      "while a migration runs.\n"
      "Example: vmm status --api-socket /tmp/vm.sock");
  cmd->add_option("--api-socket", *path, "The running VMM's control socket")->required()->check(CLI::ExistingPath);
  cmd->callback([path] { std::cout << api_call(*path, {{"command", "status"}}).dump(2) << "\n"; });
}

void add_migrate_command(CLI::App& app) {
  auto opts = std::make_shared<MigrateOptions>();
  CLI::App* cmd = app.add_subcommand("migrate", "Migrate the guest of a running `vmm run --api-socket PATH`");
  cmd->footer(
      "Prints the source's result as JSON and exits 0 when the guest now runs on the destination, 1 when the\n"
      "migration failed (before switchover the guest keeps running on the source).\n"
      "Example: vmm migrate --api-socket /tmp/vm.sock --to 127.0.0.1:4444 --mode postcopy");
  cmd->add_option("--api-socket", opts->api_socket, "The running VMM's control socket")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--to", opts->to, "HOST:PORT of `vmm receive`")->required();
  cmd->add_option("--mode", opts->mode, "precopy, postcopy or hybrid")
      ->check(CLI::IsMember({"precopy", "postcopy", "hybrid"}))
      ->capture_default_str();
  cmd->add_option("--precopy-rounds", opts->precopy_rounds, "Dirty-log rounds after the first pass (0: default)");
  add_push_rate_option(cmd, opts->push_rate_mib);
  add_link_options(cmd, opts->link);
  add_connect_option(cmd, opts->link);
  add_psk_option(cmd, opts->psk_file);
  cmd->callback([opts] { run(*opts); });
}

}  // namespace vmm::cli
