// Userfaultfd edge cases the postcopy destination relies on.
#include "userfaultfd.h"

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "error.h"

namespace {

// A thread that faulted on a registered page and was never answered (its
// event unread) must run on once the range is unregistered: a destination
// stops its fault resolver before it unregisters, and a vCPU faulting in
// between would otherwise sleep forever.
TEST(Userfaultfd, UnregisterReleasesAThreadWaitingOnAnUnansweredFault) {
  std::unique_ptr<vmm::Userfaultfd> uffd;
  try {
    uffd = std::make_unique<vmm::Userfaultfd>(UFFD_FEATURE_MINOR_SHMEM);
  } catch (const vmm::Error& e) {
    GTEST_SKIP() << "no userfaultfd with MINOR_SHMEM here: " << e.what();
  }
  int memfd = ::memfd_create("uffd-test", MFD_CLOEXEC);
  ASSERT_GE(memfd, 0);
  ASSERT_EQ(::ftruncate(memfd, 4096), 0);
  ASSERT_EQ(::pwrite(memfd, "data", 4, 0), 4);  // in the page cache, mapped nowhere: a MINOR fault
  auto* page = static_cast<volatile char*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
  ASSERT_NE(page, MAP_FAILED);
  ASSERT_EQ(uffd->try_register(const_cast<char*>(page), 4096, UFFDIO_REGISTER_MODE_MINOR), 0);

  std::atomic<bool> done{false};
  std::thread toucher([&] {
    char c = page[0];
    EXPECT_EQ(c, 'd');
    done = true;
  });
  pollfd pfd{uffd->fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 5000), 1) << "the touch raised no userfaultfd event within 5 s";

  uffd->unregister(const_cast<char*>(page), 4096);
  for (int i = 0; i < 200 && !done; i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  bool released = done;
  uffd.reset();  // closing wakes it in any case, so the test never hangs
  toucher.join();
  EXPECT_TRUE(released) << "the faulting thread still slept 2 s after UFFDIO_UNREGISTER";
  ::munmap(const_cast<char*>(page), 4096);
  ::close(memfd);
}

}  // namespace
