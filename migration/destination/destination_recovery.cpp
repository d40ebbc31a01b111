// The destination's links during postcopy: the urgent connection's receive
// loop, and a lost link replaced by the source's reconnection of the same
// migration (the guest runs on meanwhile, or waits, before StartedAck).
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "clock.h"
#include "destination.h"
#include "error.h"
#include "fault_resolver.h"
#include "thread_priority.h"

namespace migration {

using vmm::ms_between;

void Destination::urgent_loop() {
  vmm::make_current_thread_urgent("urgent-recv");
  try {
    while (!postcopy_done()) {
      std::array<uint8_t, kHeaderSize> raw;
      FrameHeader h = link_.urgent().receive_header(raw);
      if (h.type == FrameType::StartedAck) {  // the commit: here, not behind the push
        std::vector<uint8_t> payload(h.length);
        link_.urgent().read_exact(payload);
        verify_crc(raw, payload, h.crc);
        go();
        announce_if_complete();  // every page may be here already (precopy sent them all)
        continue;
      }
      if (h.type != FrameType::Pages || !(h.flags & kPagesUrgent))
        throw ProtocolError(fmt::format("unexpected {} on the urgent connection", frame_type_name(h.type)));
      guest_.pages->receive_pages(link_.urgent(), raw, h, true);
      announce_if_complete();
    }
  } catch (const ConnectionError& e) {
    // A lost link: the main thread finds its connection ended too, and recovers.
    if (postcopy_done()) return;
    spdlog::debug("receive: urgent connection: {}", e.what());
    link_.main().shutdown();
  } catch (const std::exception& e) {
    if (postcopy_done()) return;
    std::lock_guard lock(end_.error_mutex);
    end_.error = fmt::format("urgent connection: {}", e.what());
    link_.main().shutdown();
  }
}

void Destination::start_link_threads() {
  link_.up(options_.link);
  postcopy_.urgent_thread = std::thread([this] { urgent_loop(); });
}

void Destination::stop_link_threads() {
  link_.down();
  if (postcopy_.urgent_thread.joinable()) postcopy_.urgent_thread.join();
}

// Accepts one connection; installs it if it is this migration's reconnection.
bool Destination::take_reconnection(std::chrono::milliseconds left) {
  Arrival m, u;
  try {
    m = link_.accept_hello(
        [this](const Hello& h) {
          return h.role == Role::Main && h.resume && h.session == guest_.hello.session
                     ? std::string()
                     : std::string("this destination is receiving another migration; it takes only that one's "
                                   "reconnection");
        },
        options_.link.link_timeout, std::max(left, std::chrono::milliseconds(1)), "reconnecting source");
  } catch (const ConnectionError&) {
    return false;  // nobody came before the deadline: the caller says so
  }
  try {
    m.channel->set_receive_timeout(options_.link.link_timeout);
    HelloReply yes = reply_of_this_host();
    yes.accepted = true;
    yes.uffd_minor = true;
    m.channel->send(FrameType::HelloReply, 0, encode(yes));
    u = link_.accept_hello(urgent_of_this_migration("not the reconnecting migration's urgent channel"),
                           options_.link.link_timeout, options_.link.link_timeout, "reconnecting urgent");
    if (auto why = u.channel->mark_urgent(); !why.empty()) spdlog::debug("receive: page requests go unmarked ({})", why);
    Channel* main = m.channel.get();
    // What this side holds: the source pushes the rest again.
    auto parts = split_received(guest_.pages->present_bitmap());
    for (size_t i = 0; i < parts.size(); i++)
      main->send(FrameType::Received, i + 1 == parts.size() ? kReceivedLast : 0, encode(parts[i]));
    link_.replace(std::move(m.channel), std::move(u.channel));
    return true;
  } catch (const ConnectionError& e) {
    spdlog::warn("receive: a reconnection failed: {}", e.what());
  } catch (const ProtocolError& e) {
    spdlog::warn("receive: a reconnection failed: {}", e.what());
  }
  return false;
}

// Takes connections until this migration's reconnection is installed (true)
// or `deadline` passes (false).
bool Destination::await_reconnection(Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    if (take_reconnection(left)) return true;
  }
}

// The link is lost after the guest started here: keep it running on what it
// has, keep listening, take the source's reconnection, say what we hold, ask
// again for what was asked and not answered.
void Destination::recover(const std::string& why) {
  bool acked = end_.started_acked;
  if (guest_.pages->complete() && acked) {
    // The link went as the last page landed: nothing is left to recover, but
    // the source must still hear it (tell_source_complete).
    end_.complete = true;
    return;
  }
  auto t_lost = Clock::now();
  phases_.to(DestinationPhase::Paused, why);
  stop_link_threads();
  // Read again: the urgent thread may have taken StartedAck (and gone on to
  // postcopy) while this one was noticing the loss.
  acked = end_.started_acked;
  uint64_t missing = guest_.pages->npages() - guest_.pages->present();
  // Before StartedAck the source may have resumed the guest itself: this
  // copy has not run, and starts only on the source's reconnection.
  spdlog::warn("postcopy: link lost ({}); {} of {} pages still on the source; {}; waiting up to {:.0f} s for it to "
               "reconnect", why, missing, guest_.pages->npages(),
               acked ? "the guest runs on the pages it has"
                     : "the guest has not run here and waits until the source confirms it let go",
               static_cast<double>(options_.link.recovery_timeout.count()) / 1000);
  if (!await_reconnection(t_lost + options_.link.recovery_timeout)) {
    if (!acked)
      throw vmm::Error(fmt::format("the source did not reconnect within {:.0f} s of the lost link ({}) and never "
                                   "said it let go of the guest: it runs there, and never ran here",
                                   static_cast<double>(options_.link.recovery_timeout.count()) / 1000, why));
    throw vmm::Error(fmt::format("the source did not reconnect within {:.0f} s of the lost link ({}): {} pages "
                                 "never came, and the guest cannot run without them",
                                 static_cast<double>(options_.link.recovery_timeout.count()) / 1000, why,
                                 guest_.pages->npages() - guest_.pages->present()));
  }
  // The link goes up first: a fault from here on is requested by the
  // resolver itself, one before is in what is asked for again (a page asked
  // for twice comes twice and is claimed once). Collected first, a fault in
  // between was marked requested and its request dropped on the down link.
  // No link thread runs here, so nothing else moves the phase meanwhile.
  if (end_.started_acked && phases_.now() == DestinationPhase::Paused)
    phases_.to(DestinationPhase::Postcopy, "the source reconnected");
  start_link_threads();
  std::vector<uint64_t> again = guest_.pages->outstanding();
  link_.request(again);
  // The source redials only once it let go of the guest (it got Started).
  go();
  times_.pauses.push_back({ms_between(t_lost, Clock::now()), guest_.pages->npages() - guest_.pages->present(), again.size()});
  spdlog::info("postcopy: resumed after {:.0f} ms; {} pages still to come, {} asked for again", times_.pauses.back().ms,
               times_.pauses.back().pages_missing, again.size());
}

// After Complete the source says CompleteAck: that it came within the link
// timeout says the source heard. A reset, a close or silence instead says
// Complete may have gone with the link (neither a send into a socket buffer
// nor a close proves it arrived). Frames still in flight (the push,
// heartbeats) are read past.
bool Destination::source_heard_complete() {
  try {
    for (;;) {
      std::array<uint8_t, kHeaderSize> raw;
      FrameHeader h = link_.main().receive_header(raw);
      std::vector<uint8_t> payload(h.length);
      link_.main().read_exact(payload);
      if (h.type == FrameType::CompleteAck) return true;
    }
  } catch (const ConnectionError& e) {
    spdlog::warn("receive: no CompleteAck from the source ({})", e.what());
  } catch (const ProtocolError& e) {
    spdlog::warn("receive: after Complete: {}", e.what());
  }
  return false;
}

// Every page is here, but the source never heard Complete (the link was lost
// as the last page landed, or as Complete went): it redials, and its
// reconnection is answered with a full Received bitmap, which it takes for
// completion. Meanwhile the guest runs on, once the source has let go of it;
// before StartedAck it has not started, as in recover(). A source that never comes back
// leaves a guest with all its pages: it runs on, with a warning.
void Destination::tell_source_complete() {
  if (end_.complete_sent && (end_.complete_acked || source_heard_complete())) return;
  phases_.to(DestinationPhase::Paused, "every page is here; the source has not heard it");
  stop_link_threads();
  bool acked = end_.started_acked;
  spdlog::warn("receive: every page is here, but the source has not heard it; waiting up to {:.0f} s for its "
               "reconnection to tell it{}",
               static_cast<double>(options_.link.recovery_timeout.count()) / 1000,
               acked ? "" : " (the guest waits until the source confirms it let go)");
  bool told = await_reconnection(Clock::now() + options_.link.recovery_timeout);
  if (!told && !acked)
    throw vmm::Error("every page came, but the source never confirmed it let go of the guest and did not reconnect: "
                     "it may run the guest, so this copy does not");
  go();
  if (told) spdlog::info("receive: the source reconnected and took the full Received bitmap for completion");
  else spdlog::warn("receive: the source did not reconnect; the guest holds every page and runs on here");
}

}  // namespace migration
