// Small helpers shared by the server's parts: the clock, elapsed time, and the one log format (stderr).
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace beast {

using Clock = std::chrono::steady_clock;

inline void log(const std::string& line) { std::fprintf(stderr, "beast-envserver: %s\n", line.c_str()); }

inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace beast
