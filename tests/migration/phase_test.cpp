// The migration's phases: the paths the commit protocol allows on each side,
// and none other.
#include "phase.h"

#include <gtest/gtest.h>

namespace {

using migration::DestinationPhase;
using migration::PhaseError;
using migration::SourcePhase;

TEST(Phases, TheSourcesWholePathsAreAllowed) {
  using S = SourcePhase;
  for (auto path : {std::vector<S>{S::Connecting, S::Precopy, S::Switchover, S::Postcopy, S::Paused, S::Postcopy,
                                   S::Completed},
                    std::vector<S>{S::Connecting, S::Switchover, S::ResumedHere},
                    std::vector<S>{S::Connecting, S::Switchover, S::Postcopy, S::Paused, S::Completed},
                    std::vector<S>{S::Connecting, S::Precopy, S::Failed}}) {
    migration::SourcePhases m("test", S::Idle);
    for (S p : path) EXPECT_NO_THROW(m.to(p)) << migration::phase_name(p);
    EXPECT_TRUE(migration::is_final(m.now()));
  }
}

// Once the destination may run the guest, the source never takes it back;
// before it, the source does not fail without resuming it.
TEST(Phases, TheSourceNeverResumesAfterTheCommitNorFailsSilentlyBeforeIt) {
  using S = SourcePhase;
  migration::SourcePhases m("test", S::Idle);
  m.to(S::Connecting);
  m.to(S::Switchover);
  EXPECT_THROW(m.to(S::Failed), PhaseError);
  EXPECT_THROW(m.to(S::Completed), PhaseError);
  m.to(S::Postcopy);
  EXPECT_THROW(m.to(S::ResumedHere), PhaseError);
  m.to(S::Paused);
  EXPECT_THROW(m.to(S::ResumedHere), PhaseError);
  EXPECT_THROW(m.to(S::Switchover), PhaseError);
  EXPECT_EQ(m.now(), S::Paused) << "a refused transition leaves the phase as it was";
}

TEST(Phases, TheDestinationRunsNoGuestBeforeItIsHeld) {
  using D = DestinationPhase;
  migration::DestinationPhases m("test", D::Listening);
  EXPECT_THROW(m.to(D::Postcopy), PhaseError);
  m.to(D::Handshake);
  m.to(D::Precopy);
  EXPECT_THROW(m.to(D::Postcopy), PhaseError);
  EXPECT_THROW(m.to(D::Held), PhaseError) << "held comes only after the state was restored";
  m.to(D::Restoring);
  EXPECT_THROW(m.to(D::Completed), PhaseError);
  m.to(D::Held);
  m.to(D::Paused, "the link went before StartedAck");
  m.to(D::Postcopy, "the reconnection");
  m.to(D::Completed);
  EXPECT_FALSE(m.to_unless_final(D::Failed, "after the end"));
  EXPECT_EQ(m.now(), D::Completed);
  EXPECT_TRUE(m.reached(D::Held));
  EXPECT_FALSE(m.reached(D::Failed));
}

TEST(Phases, TheTimelineSaysWhenEachPhaseBeganAndWhy) {
  using D = DestinationPhase;
  migration::DestinationPhases m("test", D::Listening);
  m.to(D::Handshake, "127.0.0.1:1234");
  m.to(D::Failed, "bad frame");
  auto j = m.to_json();
  ASSERT_EQ(j.size(), 3u) << j.dump();
  EXPECT_EQ(j[0]["phase"], "listening");
  EXPECT_EQ(j[1]["phase"], "handshake");
  EXPECT_EQ(j[1]["detail"], "127.0.0.1:1234");
  EXPECT_EQ(j[2]["phase"], "failed");
  EXPECT_GE(j[2]["at_ms"].get<double>(), j[1]["at_ms"].get<double>());
}

}  // namespace
