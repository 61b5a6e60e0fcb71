#include "server.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <system_error>
#include <utility>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol.h"

#if __has_include("ViZDoomVersion.h")
#include "ViZDoomVersion.h"
#define BEAST_VIZDOOM_LIB_VERSION VIZDOOM_LIB_VERSION_STR
#else
// envserver/build.sh builds exactly this version of the client library and checks its ViZDoomVersion.h.
#define BEAST_VIZDOOM_LIB_VERSION "1.3.2"
#endif

namespace beast {

static_assert(kObsSide == static_cast<int>(proto::kSide), "protocol.h and doom_env.h disagree on the side");
static_assert(kAudioChannels * kAudioSamples * sizeof(int16_t) == proto::kAudioBytes, "audio size mismatch");

namespace {

using Clock = std::chrono::steady_clock;

void log(const std::string& line) { std::fprintf(stderr, "beast-envserver: %s\n", line.c_str()); }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

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

// What a finished reset/step left for the socket thread. Read only after the env id came out of the queue.
struct Outcome {
  bool ok = true;        // false: the game died and could not be recreated; `error` says why
  bool crashed = false;  // the engine died during this command and was recreated
  StepResult result{};
  std::string error;
};

// One game and the thread that drives it. The socket thread calls start_*() on an idle worker and reads
// outcome()/buffers only after the worker pushed its id onto the completion queue.
class GameWorker {
 public:
  GameWorker(int index, const ServerOptions& options, CompletionQueue& done, std::atomic<pid_t>& engine_pid)
      : index_(index),
        options_(options),
        done_(done),
        engine_pid_(engine_pid),
        rgb_(proto::kRgbBytes),
        depth_(proto::kPlaneBytes),
        enemy_(proto::kPlaneBytes),
        audio_(kAudioChannels * kAudioSamples),
        vars_(var_names().size()),
        final_vars_(var_names().size()),
        thread_([this] { loop(); }) {}

  ~GameWorker() {
    request_quit();
    if (thread_.joinable()) thread_.join();
  }
  GameWorker(const GameWorker&) = delete;
  GameWorker& operator=(const GameWorker&) = delete;

  void start_reset() { command(Command::kReset, 0); }
  void start_step(int action) { command(Command::kStep, action); }
  void request_quit() {
    quitting_ = true;
    command(Command::kQuit, 0);
  }
  bool exited() const { return exited_; }

  const Outcome& outcome() const { return outcome_; }
  bool alive() const { return env_ != nullptr; }
  int num_actions() const { return num_actions_; }
  const std::vector<std::string>& action_names() const { return action_names_; }
  const uint8_t* rgb() const { return rgb_.data(); }
  const uint8_t* depth() const { return depth_.data(); }
  const uint8_t* enemy() const { return enemy_.data(); }
  const int16_t* audio() const { return audio_.data(); }
  const float* vars() const { return vars_.data(); }
  const float* final_vars() const { return final_vars_.data(); }

 private:
  enum class Command { kNone, kReset, kStep, kQuit };

  void command(Command cmd, int action) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (command_ == Command::kQuit) return;
      command_ = cmd;
      action_ = action;
    }
    cv_.notify_one();
  }

  ObsView view() {
    return ObsView{rgb_.data(), depth_.data(), enemy_.data(), audio_.data(), vars_.data(), final_vars_.data()};
  }

  void loop() {
    outcome_ = Outcome{};
    try {
      create(0);
      num_actions_ = env_->num_actions();
      action_names_ = env_->action_names();
    } catch (const std::exception& e) {
      outcome_.ok = false;
      outcome_.error = "env " + std::to_string(index_) + " failed to start: " + e.what();
      env_.reset();
    }
    done_.push(index_);
    for (;;) {
      Command cmd;
      int action;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return command_ != Command::kNone; });
        cmd = command_;
        action = action_;
        if (cmd != Command::kQuit) command_ = Command::kNone;
      }
      if (cmd == Command::kQuit) break;
      outcome_ = Outcome{};
      if (cmd == Command::kReset) {
        do_reset();
      } else {
        do_step(action);
      }
      done_.push(index_);
    }
    env_.reset();  // closes the engine on this thread, so a slow close stalls no other game
    engine_pid_ = 0;
    exited_ = true;
  }

  void create(uint64_t generation) {
    env_.reset();
    engine_pid_ = 0;
    env_ = std::make_unique<DoomEnv>(options_.env, env_seed(options_.seed, index_, generation));
    engine_pid_ = env_->engine_pid();
  }

  // Replaces a dead game with a fresh one (next seed generation) and writes its first observation.
  void recreate(const std::string& why) {
    if (quitting_) {  // shutting down: the engine was killed on purpose, nothing to restart
      outcome_.ok = false;
      outcome_.error = "env " + std::to_string(index_) + " stopped: server shutting down";
      return;
    }
    log("env " + std::to_string(index_) + " crashed (" + why + "); restarting it");
    std::string last_error = why;
    for (int attempt = 0; attempt < 3 && !quitting_; ++attempt) {
      try {
        create(++generation_);
        env_->reset(view());
        return;
      } catch (const std::exception& e) {
        env_.reset();
        engine_pid_ = 0;
        last_error = e.what();
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
    }
    outcome_.ok = false;
    outcome_.error = "env " + std::to_string(index_) + " died and could not be restarted: " + last_error;
  }

  void do_reset() {
    running_return_ = 0.0f;
    running_length_ = 0;
    outcome_.result = StepResult{0.0f, false, false, 0.0f, 0};
    if (!env_) {
      outcome_.crashed = true;
      recreate("no running game");
    } else {
      try {
        env_->reset(view());
      } catch (const std::exception& e) {
        outcome_.crashed = true;
        recreate(e.what());
      }
    }
    final_vars_ = vars_;
  }

  void do_step(int action) {
    final_vars_ = vars_;  // what a crash reports: the last state we saw
    if (env_) {
      try {
        StepResult r = env_->step(action, view());
        if (!r.done) final_vars_ = vars_;  // on done DoomEnv wrote the ended episode's last vars there
        running_return_ += r.reward;
        ++running_length_;
        if (r.done) {
          running_return_ = 0.0f;
          running_length_ = 0;
        }
        outcome_.result = r;
        return;
      } catch (const std::exception& e) {
        outcome_.error = e.what();
      }
    }
    // A crash ends the episode: report what it had earned so far, then start the next one in a new game.
    outcome_.crashed = true;
    outcome_.result = StepResult{0.0f, true, false, running_return_, running_length_};
    running_return_ = 0.0f;
    running_length_ = 0;
    recreate(env_ ? outcome_.error : "no running game");
  }

  const int index_;
  const ServerOptions& options_;
  CompletionQueue& done_;
  std::atomic<pid_t>& engine_pid_;
  std::unique_ptr<DoomEnv> env_;
  uint64_t generation_ = 0;
  int num_actions_ = 0;
  std::vector<std::string> action_names_;
  float running_return_ = 0.0f;
  int32_t running_length_ = 0;
  Outcome outcome_;
  std::vector<uint8_t> rgb_, depth_, enemy_;
  std::vector<int16_t> audio_;
  std::vector<float> vars_;
  std::vector<float> final_vars_;  // vars of the step's own state: the ended episode's last one when done
  std::atomic<bool> quitting_{false};
  std::atomic<bool> exited_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  Command command_ = Command::kNone;
  int action_ = 0;
  std::thread thread_;  // last: starts after every other member exists
};

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

// SIGKILLs every other member of our process group (the engines, whatever they spawned) when we lead it. When we
// do not (started from a shell pipeline), the group is someone else's and we only kill the engines we know.
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
  void loop() {
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

// Which client is waiting for an env's result: a sync reset/step job (all envs, one reply) or an async peer.
struct SyncJob {
  std::string peer;
  uint32_t seq = 0;
  int remaining = 0;
  std::string error;
};
struct Slot {
  bool busy = false;
  std::shared_ptr<SyncJob> job;
  std::string async_peer;
};

std::string json_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? "," : "") + proto::json_quote(items[i]);
  return out + "]";
}

}  // namespace

uint64_t env_seed(uint64_t base_seed, int index, uint64_t generation) {
  const uint64_t first = splitmix64(base_seed + static_cast<uint64_t>(index));
  return generation == 0 ? first : splitmix64(first + generation);
}

std::string library_version() { return BEAST_VIZDOOM_LIB_VERSION; }

std::string engine_version(const std::string& vizdoom_dir) {
  const std::string binary = vizdoom_dir + "/vizdoom";
  if (access(binary.c_str(), X_OK) != 0) {
    throw std::runtime_error("no ViZDoom engine binary at " + binary +
                             "; pass --vizdoom-dir with the installed vizdoom wheel's package folder");
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  const pid_t pid = fork();
  if (pid < 0) throw std::system_error(errno, std::generic_category(), "fork");
  if (pid == 0) {
    // `vizdoom --version` prints its banner and then asks for an IWAD on stdin; /dev/null makes it exit at once.
    const int null_fd = open("/dev/null", O_RDWR);
    dup2(null_fd, STDIN_FILENO);
    dup2(fds[1], STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    execl(binary.c_str(), binary.c_str(), "--version", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string output;
  const auto start = Clock::now();
  while (output.find('\n') == std::string::npos && seconds_since(start) < 10.0) {
    pollfd pfd{fds[0], POLLIN, 0};
    if (poll(&pfd, 1, 200) <= 0) continue;
    char buf[512];
    const ssize_t n = read(fds[0], buf, sizeof buf);
    if (n <= 0) break;
    output.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  kill(pid, SIGKILL);  // it has said what we need; never leave it waiting
  waitpid(pid, nullptr, 0);
  std::smatch match;
  if (!std::regex_search(output, match, std::regex(R"(ViZDoom (\d+\.\d+\.\d+))"))) {
    throw std::runtime_error("could not read the version of " + binary + " (it printed '" +
                             output.substr(0, output.find('\n')) + "'); reinstall the vizdoom wheel (make venv)");
  }
  return match[1];
}

bool is_loopback_or_local(const std::string& address) {
  if (address.rfind("ipc://", 0) == 0 || address.rfind("inproc://", 0) == 0) return true;
  if (address.rfind("tcp://", 0) != 0) return false;
  std::string host = address.substr(6);
  const auto colon = host.rfind(':');
  if (colon != std::string::npos) host = host.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host == "localhost" || host == "lo" || host == "::1" || host.rfind("127.", 0) == 0;
}

CurveKeys read_curve_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read the CURVE key file " + path);
  CurveKeys keys;
  const std::regex line_re(R"re(^\s*(public|secret)-key\s*=\s*"([^"]*)")re");
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (!std::regex_search(line, m, line_re)) continue;
    (m[1] == "public" ? keys.public_key : keys.secret_key) = m[2];
  }
  if (keys.secret_key.size() != 40) {
    throw std::runtime_error("the CURVE key file " + path + " needs a line secret-key = \"<40 Z85 chars>\"");
  }
  char derived[41] = {};
  if (zmq_curve_public(derived, keys.secret_key.c_str()) != 0) {
    throw std::runtime_error("the secret key in " + path + " is not valid Z85");
  }
  if (!keys.public_key.empty() && keys.public_key != derived) {
    throw std::runtime_error("the public key in " + path + " does not belong to its secret key");
  }
  keys.public_key = derived;
  return keys;
}

struct Server::Impl {
  explicit Impl(ServerOptions opts)
      : options(std::move(opts)), engine_pids(static_cast<std::size_t>(options.num_envs)), slots(engine_pids.size()) {}

  int run();
  void start_games();
  void serve();
  void shutdown_games();
  void handle(std::vector<zmq::message_t>& frames);
  void on_finished(const std::vector<int>& ids);
  void send(const std::string& peer, std::vector<zmq::message_t> frames);
  void send_results(proto::MsgType type, const std::string& peer, uint32_t seq, const std::vector<int>& ids);
  std::string info_json() const;
  StopReason stop_reason() const { return static_cast<StopReason>(stop.load()); }
  void request_stop(StopReason reason) {
    int expected = 0;
    stop.compare_exchange_strong(expected, static_cast<int>(reason));
  }

  ServerOptions options;
  BlockedSignals signals;  // before the context and every thread, so all of them inherit the mask
  std::atomic<int> stop{0};
  std::vector<std::atomic<pid_t>> engine_pids;
  zmq::context_t context{1};
  zmq::socket_t socket{context, zmq::socket_type::router};
  CompletionQueue completions;
  std::vector<std::unique_ptr<GameWorker>> workers;
  std::vector<Slot> slots;
  std::map<std::string, std::vector<int>> async_ready;  // peer -> envs finished this poll round
  Clock::time_point last_heard = Clock::now();
  int num_actions = 0;
  std::vector<std::string> action_names;
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;
int Server::run() { return impl_->run(); }

int Server::Impl::run() {
  ShutdownGuard guard(signals.set(), stop, engine_pids);
  socket.set(zmq::sockopt::linger, 0);
  // Requests are a few bytes per env; a bigger frame is garbage and ZeroMQ drops the connection that sent it.
  socket.set(zmq::sockopt::maxmsgsize, int64_t{1} << 20);
  if (!options.curve_secret_key_file.empty()) {
    const CurveKeys keys = read_curve_keys(options.curve_secret_key_file);
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_key);
  }
  try {
    socket.bind(options.address);
  } catch (const zmq::error_t& e) {
    log("error: cannot bind " + options.address + ": " + e.what());
    return 1;
  }
  int status = 0;
  start_games();
  if (stop_reason() == StopReason::kNone) {
    std::printf("READY %s\n", options.address.c_str());
    std::fflush(stdout);
    serve();
  } else if (stop_reason() == StopReason::kStartupFailed) {
    status = 1;
  }
  log(std::string("stopping: ") + describe(stop_reason()));
  shutdown_games();
  socket.close();
  // Anything left in our group (an engine that outlived its DoomEnv) goes now; we only lead the group when a
  // launcher started us in a session of our own, as beast.envs.EnvServer does.
  kill_group_members(engine_pids);
  return status;
}

void Server::Impl::start_games() {
  workers.reserve(engine_pids.size());
  for (int i = 0; i < options.num_envs; ++i) {
    workers.push_back(std::make_unique<GameWorker>(i, options, completions, engine_pids[i]));
  }
  int started = 0;
  const auto begin = Clock::now();
  while (started < options.num_envs && stop_reason() == StopReason::kNone) {
    pollfd pfd{completions.fd(), POLLIN, 0};
    poll(&pfd, 1, 100);
    for (int id : completions.drain()) {
      ++started;
      const Outcome& out = workers[id]->outcome();
      if (!out.ok) {
        log("error: " + out.error);
        request_stop(StopReason::kStartupFailed);
      }
    }
    if (seconds_since(begin) > options.startup_timeout_s) {
      char text[96];
      std::snprintf(text, sizeof text, "error: the games did not start within %g s", options.startup_timeout_s);
      log(text);
      request_stop(StopReason::kStartupFailed);
    }
  }
  if (stop_reason() == StopReason::kNone) {
    num_actions = workers[0]->num_actions();
    action_names = workers[0]->action_names();
  }
}

void Server::Impl::shutdown_games() {
  for (auto& w : workers) w->request_quit();
  const auto begin = Clock::now();
  auto all_exited = [this] {
    for (auto& w : workers) {
      if (!w->exited()) return false;
    }
    return true;
  };
  while (!all_exited() && seconds_since(begin) < 3.0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // A game stuck in a step (hung engine) is released by killing its engine: DoomEnv::step then throws.
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (!workers[i]->exited() && engine_pids[i] > 0) kill(engine_pids[i], SIGKILL);
  }
  workers.clear();
}

void Server::Impl::serve() {
  while (stop_reason() == StopReason::kNone) {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}, {nullptr, completions.fd(), ZMQ_POLLIN, 0}};
    zmq::poll(items, 2, std::chrono::milliseconds(100));
    if (items[0].revents & ZMQ_POLLIN) {
      // Bounded so a flood of requests cannot starve result delivery.
      for (int n = 0; n < 256; ++n) {
        std::vector<zmq::message_t> frames;
        if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
        last_heard = Clock::now();
        handle(frames);
      }
    }
    if (items[1].revents & ZMQ_POLLIN) on_finished(completions.drain());
    for (auto& [peer, ids] : async_ready) send_results(proto::MsgType::kAsyncResults, peer, 0, ids);
    async_ready.clear();
    if (options.idle_timeout_s > 0 && seconds_since(last_heard) > options.idle_timeout_s) {
      char text[96];
      std::snprintf(text, sizeof text, "heard nothing from any client for %g s", options.idle_timeout_s);
      log(text);
      request_stop(StopReason::kIdle);
    }
  }
}

void Server::Impl::handle(std::vector<zmq::message_t>& frames) {
  // frames[0] is the ROUTER's peer identity; the client's message follows.
  const std::string peer = frames[0].to_string();
  std::vector<zmq::message_t> body(std::make_move_iterator(frames.begin() + 1), std::make_move_iterator(frames.end()));
  const uint32_t seq = body.empty() ? 0 : proto::peek_seq(body[0]);
  proto::Request req;
  try {
    req = proto::parse_request(body, options.num_envs, num_actions);
  } catch (const proto::ProtocolError& e) {
    send(peer, proto::make_error(seq, e.code(), e.what()));
    return;
  }
  using proto::MsgType;
  switch (req.type) {
    case MsgType::kHello:
      send(peer, proto::make_info(seq, info_json()));
      return;
    case MsgType::kPing:
      send(peer, proto::make_simple(MsgType::kPong, seq));
      return;
    case MsgType::kClose:
      send(peer, proto::make_simple(MsgType::kClosed, seq));
      request_stop(StopReason::kClose);
      return;
    default:
      break;
  }
  // Reset/step/send: check every env before starting any, so a rejected request changes nothing.
  for (int32_t id : req.env_ids) {
    if (slots[id].busy) {
      send(peer, proto::make_error(seq, proto::ErrorCode::kBusy,
                                   "env " + std::to_string(id) + " is still stepping; wait for its result first"));
      return;
    }
  }
  if (req.type == MsgType::kReset) {
    for (const Slot& s : slots) {
      if (s.busy) {
        send(peer, proto::make_error(seq, proto::ErrorCode::kBusy, "reset while envs are still stepping"));
        return;
      }
    }
    req.env_ids.clear();
    for (int i = 0; i < options.num_envs; ++i) req.env_ids.push_back(i);
  }
  std::shared_ptr<SyncJob> job;
  if (req.type != MsgType::kSend) {
    job = std::make_shared<SyncJob>();
    job->peer = peer;
    job->seq = seq;
    job->remaining = static_cast<int>(req.env_ids.size());
  }
  for (std::size_t j = 0; j < req.env_ids.size(); ++j) {
    const int id = req.env_ids[j];
    Slot& slot = slots[id];
    slot.busy = true;
    slot.job = job;
    slot.async_peer = job ? std::string() : peer;
    if (req.type == MsgType::kReset) {
      workers[id]->start_reset();
    } else {
      workers[id]->start_step(req.actions[j]);
    }
  }
}

void Server::Impl::on_finished(const std::vector<int>& ids) {
  last_heard = Clock::now();  // a long restart must not count as client silence
  for (int id : ids) {
    Slot& slot = slots[id];
    slot.busy = false;
    const Outcome& out = workers[id]->outcome();
    if (std::shared_ptr<SyncJob> job = std::move(slot.job)) {
      if (!out.ok && job->error.empty()) job->error = out.error;
      if (--job->remaining == 0) {
        if (job->error.empty()) {
          std::vector<int> all(static_cast<std::size_t>(options.num_envs));
          for (int i = 0; i < options.num_envs; ++i) all[i] = i;
          send_results(proto::MsgType::kResults, job->peer, job->seq, all);
        } else {
          send(job->peer, proto::make_error(job->seq, proto::ErrorCode::kEnvFailed, job->error));
        }
      }
    } else if (!out.ok) {
      send(slot.async_peer, proto::make_error(0, proto::ErrorCode::kEnvFailed, out.error));
    } else {
      async_ready[slot.async_peer].push_back(id);
    }
  }
}

void Server::Impl::send_results(proto::MsgType type, const std::string& peer, uint32_t seq,
                                const std::vector<int>& ids) {
  const std::size_t num_vars = var_names().size();
  proto::ResultsWriter w(type, seq, ids.size(), num_vars);
  for (std::size_t j = 0; j < ids.size(); ++j) {
    const GameWorker& g = *workers[ids[j]];
    const StepResult& r = g.outcome().result;
    const int32_t env_id = ids[j];
    const float reward = r.reward, ep_return = r.episode_return;
    const uint8_t done = r.done, truncated = r.truncated, crashed = g.outcome().crashed;
    const int32_t ep_length = r.episode_length;
    const void* sources[] = {&env_id, g.rgb(),  g.depth(),     g.enemy(),   g.audio(),  g.vars(), g.final_vars(),
                             &reward, &done,    &truncated,    &crashed,    &ep_return, &ep_length};
    for (std::size_t f = 0; f < proto::result_fields().size(); ++f) {
      std::memcpy(w.row(f, j), sources[f], w.row_bytes(f));  // x86/ARM are little-endian, the wire order
    }
  }
  send(peer, w.release());
}

void Server::Impl::send(const std::string& peer, std::vector<zmq::message_t> frames) {
  // ROUTER never blocks: a vanished peer or a full queue drops the message, and the server serves on.
  try {
    socket.send(zmq::buffer(peer), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const bool last = i + 1 == frames.size();
      socket.send(frames[i], last ? zmq::send_flags::dontwait : zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
  } catch (const zmq::error_t& e) {
    log(std::string("dropped a reply: ") + e.what());
  }
}

std::string Server::Impl::info_json() const {
  std::ostringstream js;
  const std::size_t g = var_names().size();
  js << "{\"protocol_version\":" << proto::kVersion << ",\"num_envs\":" << options.num_envs
     << ",\"num_actions\":" << num_actions << ",\"action_names\":" << json_list(action_names)
     << ",\"var_names\":" << json_list(var_names()) << ",\"obs\":{"
     << "\"rgb\":{\"shape\":[3," << kObsSide << "," << kObsSide << "],\"dtype\":\"uint8\"},"
     << "\"depth\":{\"shape\":[1," << kObsSide << "," << kObsSide << "],\"dtype\":\"uint8\"},"
     << "\"enemy\":{\"shape\":[1," << kObsSide << "," << kObsSide << "],\"dtype\":\"uint8\"},"
     << "\"audio\":{\"shape\":[" << kAudioChannels << "," << kAudioSamples << "],\"dtype\":\"int16\"},"
     << "\"vars\":{\"shape\":[" << g << "],\"dtype\":\"float32\"}}"
     << ",\"frame_skip\":" << options.env.frame_skip << ",\"scenario\":" << proto::json_quote(options.env.scenario)
     << ",\"screen_resolution\":" << proto::json_quote(options.env.screen_resolution)
     << ",\"engine_version\":" << proto::json_quote(options.engine_version)
     << ",\"library_version\":" << proto::json_quote(library_version()) << ",\"seed\":" << options.seed
     << ",\"server_pid\":" << getpid() << ",\"engine_pids\":[";
  for (std::size_t i = 0; i < engine_pids.size(); ++i) js << (i ? "," : "") << engine_pids[i].load();
  js << "]}";
  return js.str();
}

}  // namespace beast
