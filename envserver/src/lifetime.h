// Process lifetime: which signals the server takes and how, why it stops, and the guard that makes sure it does
// (docs/protocol.md, "Heartbeat, idle timeout, process lifetime").
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

namespace beast {

// Blocks the shutdown signals in every thread created after it (the ZeroMQ I/O threads and the game threads
// inherit the mask), so they are only ever taken synchronously by the watchdog's sigtimedwait.
class BlockedSignals {
 public:
  BlockedSignals() {
    sigemptyset(&set_);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
  }
  ~BlockedSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  BlockedSignals(const BlockedSignals&) = delete;
  BlockedSignals& operator=(const BlockedSignals&) = delete;
  const sigset_t& set() const { return set_; }

 private:
  sigset_t set_{};
  sigset_t previous_{};
};

enum class StopReason : int { kNone = 0, kClose, kIdle, kSignal, kParentDied, kStartupFailed };

const char* describe(StopReason reason);

// SIGKILLs every other member of our process group (the engines, whatever they spawned) when we lead it. When we
// do not (started from a shell pipeline), the group is someone else's and we only kill the engines we know.
void kill_group_members(const std::vector<std::atomic<pid_t>>& engine_pids);

// Ends the server when its parent dies or a shutdown signal arrives, and makes sure it does end: if the orderly
// shutdown has not finished `grace` after any stop request, it SIGKILLs the engines, the group and itself.
class ShutdownGuard {
 public:
  ShutdownGuard(const sigset_t& signals, std::atomic<int>& stop, const std::vector<std::atomic<pid_t>>& engine_pids)
      : signals_(signals), stop_(stop), engine_pids_(engine_pids), parent_(getppid()), thread_([this] { loop(); }) {}
  ~ShutdownGuard() {
    finished_ = true;
    thread_.join();
  }
  ShutdownGuard(const ShutdownGuard&) = delete;
  ShutdownGuard& operator=(const ShutdownGuard&) = delete;

 private:
  void loop();
  void request(StopReason reason) {
    int expected = 0;
    stop_.compare_exchange_strong(expected, static_cast<int>(reason));
  }

  static constexpr double kGraceSeconds = 10.0;
  sigset_t signals_;
  std::atomic<int>& stop_;
  const std::vector<std::atomic<pid_t>>& engine_pids_;
  const pid_t parent_;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace beast
