// Threads on the fault path (the destination's fault resolver and urgent
// receiver, the source's request server) block almost all the time and must
// run the instant data arrives, even when the vCPU and the background push
// keep every core busy (docs/lab: figures from the code's comments).
#pragma once

namespace vmm {

// Makes the calling thread SCHED_FIFO (low real-time priority); where that is
// not allowed, raises its nice level instead and says so once.
void make_current_thread_urgent(const char* name);

// Makes the calling thread SCHED_IDLE: it runs only on a core nothing else
// wants (background work that must never delay a vCPU or a fault). Says once
// when refused; the thread then runs at normal priority.
void make_current_thread_background(const char* name);

}  // namespace vmm
