#include "engine_process.h"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>

namespace beast {
namespace {

// The parent pid from /proc/PID/stat, or -1. The command name (field 2) may contain spaces and parentheses, so
// parse from the last ')'.
pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(stat.substr(close + 1));
  std::string state;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

}  // namespace

pid_t find_engine_pid(const std::string& instance_id) {
  const std::string needle = std::string("+viz_instance_id") + '\0' + instance_id + '\0';
  const pid_t self = getpid();
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return -1;
  pid_t found = -1;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || parent_of(static_cast<pid_t>(pid)) != self) continue;
    std::ifstream in(std::string("/proc/") + entry->d_name + "/cmdline");
    const std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos) {
      found = static_cast<pid_t>(pid);
      break;
    }
  }
  closedir(proc);
  return found;
}

bool kill_child(pid_t pid) {
  if (pid <= 0 || parent_of(pid) != getpid()) return false;
  return kill(pid, SIGKILL) == 0;
}

Watchdog::Watchdog(std::chrono::milliseconds timeout, std::function<void()> on_hang)
    : timeout_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count()),
      on_hang_(std::move(on_hang)),
      thread_([this] { run(); }) {}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  thread_.join();
}

int64_t Watchdog::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Watchdog::run() {
  // The poll period bounds how late a hang is noticed, not how fast steps run: steps never touch this thread.
  const auto period = std::chrono::milliseconds(250);
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_cv_.wait_for(lock, period, [this] { return stop_; })) {
    const int64_t armed_at = armed_at_ns_.load(std::memory_order_relaxed);
    if (armed_at != 0 && now_ns() - armed_at > timeout_ns_ && !fired_.exchange(true)) on_hang_();
  }
}

}  // namespace beast
