// How game threads tell the socket thread that a command finished, waking its zmq_poll.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <mutex>
#include <system_error>
#include <vector>

namespace beast {

// Wakes the socket thread's zmq_poll when a game finishes (zmq_poll accepts plain file descriptors).
class EventFd {
 public:
  EventFd() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  ~EventFd() { close(fd_); }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  void notify() {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd_, &one, sizeof one);
  }
  void clear() {
    uint64_t value = 0;
    [[maybe_unused]] ssize_t n = read(fd_, &value, sizeof value);
  }
  int fd() const { return fd_; }

 private:
  int fd_;
};

// Env ids whose command finished; filled by worker threads, drained by the socket thread.
class CompletionQueue {
 public:
  void push(int env_id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ids_.push_back(env_id);
    }
    event_.notify();
  }
  std::vector<int> drain() {
    event_.clear();  // before taking the list: a push racing with us re-arms the fd, never gets lost
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<int> out;
    out.swap(ids_);
    return out;
  }
  int fd() const { return event_.fd(); }

 private:
  std::mutex mu_;
  std::vector<int> ids_;
  EventFd event_;
};

}  // namespace beast
