// The engine as an OS process: finding it, killing it safely, and noticing when it hangs.
//
// ViZDoom 1.3.2 starts the engine with a plain fork+exec from a helper thread (its bundled boost::process
// executor; no setsid/setpgid, and the engine itself calls neither), so the engine is a direct child of this
// process in this process group. The client library keeps the pid private, hence find_engine_pid().
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace beast {

// The pid of our child process started with `+viz_instance_id <instance_id>`, or -1 if there is none.
pid_t find_engine_pid(const std::string& instance_id);

// SIGKILL `pid` only if it is still a child of this process, so a recycled pid is never hit. True if sent.
bool kill_child(pid_t pid);

// Calls `on_hang` (from its own thread) when an armed interval lasts longer than the timeout. Arming and disarming
// are two atomic stores, so the per-step cost is nil; the thread checks a few times per second.
class Watchdog {
 public:
  Watchdog(std::chrono::milliseconds timeout, std::function<void()> on_hang);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void arm() { armed_at_ns_.store(now_ns(), std::memory_order_relaxed); }
  void disarm() { armed_at_ns_.store(0, std::memory_order_relaxed); }
  bool fired() const { return fired_.load(); }

 private:
  static int64_t now_ns();
  void run();

  const int64_t timeout_ns_;
  const std::function<void()> on_hang_;
  std::atomic<int64_t> armed_at_ns_{0};
  std::atomic<bool> fired_{false};
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;  // last: started once everything it reads is initialised
};

}  // namespace beast
