// Process lifetime of the env server (lifetime.h).
#include "lifetime.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "server_util.h"

namespace beast {

const char* describe(StopReason reason) {
  switch (reason) {
    case StopReason::kClose: return "closed by the client";
    case StopReason::kIdle: return "idle timeout";
    case StopReason::kSignal: return "signal";
    case StopReason::kParentDied: return "parent process died";
    case StopReason::kStartupFailed: return "startup failed";
    default: return "running";
  }
}

void kill_group_members(const std::vector<std::atomic<pid_t>>& engine_pids) {
  for (const auto& pid : engine_pids) {
    if (pid > 0) kill(pid, SIGKILL);
  }
  const pid_t self = getpid();
  if (getpgrp() != self) return;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return;
  while (dirent* entry = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(entry->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close_paren = text.rfind(')');  // comm may hold spaces and parens; fields resume after the last ')'
    if (close_paren == std::string::npos) continue;
    std::istringstream fields(text.substr(close_paren + 2));
    std::string state;
    long ppid = 0, pgrp = 0;
    fields >> state >> ppid >> pgrp;
    if (pgrp == self) kill(static_cast<pid_t>(pid), SIGKILL);
  }
  closedir(proc);
}

void ShutdownGuard::loop() {
  Clock::time_point stop_seen{};
  bool stopping = false;
  while (!finished_) {
    timespec wait{0, 100 * 1000 * 1000};
    const int sig = sigtimedwait(&signals_, nullptr, &wait);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) request(StopReason::kSignal);
    // getppid() changes when the parent dies, whichever of its threads forked us (unlike PR_SET_PDEATHSIG).
    if (getppid() != parent_) request(StopReason::kParentDied);
    if (!stopping && stop_ != 0) {
      stopping = true;
      stop_seen = Clock::now();
    }
    if (stopping && seconds_since(stop_seen) > kGraceSeconds) {
      log("shutdown took longer than " + std::to_string(static_cast<int>(kGraceSeconds)) + " s; killing");
      kill_group_members(engine_pids_);
      kill(getpid(), SIGKILL);
    }
  }
}

}  // namespace beast
