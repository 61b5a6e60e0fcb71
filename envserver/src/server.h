// The env server: K games stepped by K threads behind one ZeroMQ ROUTER socket.
//
// One thread (Server::run) owns the socket and never blocks on a game: it hands actions to per-game worker
// threads and learns about finished steps through a completion queue whose eventfd sits in the same zmq_poll as
// the socket. A slow or restarting game therefore delays only its own results. docs/protocol.md describes the
// messages and, under "Heartbeat, idle timeout, process lifetime", the orphan-safety rules.
//
// The parts: server.cpp (the socket loop: requests, results, sync jobs), game_worker.h (one game's thread),
// completion_queue.h (worker -> socket thread wake-ups), lifetime.{h,cpp} (signals, stop reasons, the shutdown
// guard), server_setup.cpp (seeds, version checks, address policy, CURVE keys: the functions declared below).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "doom_env.h"

namespace beast {

struct ServerOptions {
  std::string address;
  EnvOptions env;
  int num_envs = 1;
  uint64_t seed = 0;
  double idle_timeout_s = 30.0;        // 0 disables
  std::string curve_secret_key_file;   // empty: no CURVE
  std::string curve_allowed_clients_file;  // with CURVE: the client public keys served, all others refused
  std::string engine_version;          // reported in the info reply
  double startup_timeout_s = 180.0;    // all games must be up by then
};

// Seed of env `index` after `generation` restarts: splitmix64 mixing so that neighbouring base seeds and env
// indices give unrelated engine seeds (ViZDoom keeps the low 32 bits).
uint64_t env_seed(uint64_t base_seed, int index, uint64_t generation);

// Runs `<vizdoom_dir>/vizdoom --version` and returns the version it prints ("1.3.2"); throws std::runtime_error
// with a user-facing message when the binary is missing or prints nothing recognisable.
std::string engine_version(const std::string& vizdoom_dir);
// The ViZDoom client library version this binary was built against.
std::string library_version();

// True when a tcp:// address binds only a loopback interface (127.0.0.0/8, ::1, localhost, lo).
bool is_loopback_or_local(const std::string& address);

// Reads a Z85 CURVE keypair file (`public-key = "..."` and `secret-key = "..."` lines, the CZMQ/zcert layout);
// the public key may be omitted and is then derived. Throws std::runtime_error naming the problem.
struct CurveKeys {
  std::string public_key;
  std::string secret_key;
};
CurveKeys read_curve_keys(const std::string& path);

// The client public keys (Z85) in an allow-list file: one per line, bare or as `public-key = "..."` (the layout of
// a key file, so a client's public key file can be appended as it is); `#` starts a comment. Throws
// std::runtime_error naming the file and the line that is not a key, or when the file holds no key.
std::vector<std::string> read_allowed_clients(const std::string& path);

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, starts the games, prints "READY <address>" on stdout, serves until close/idle/signal/parent death.
  // Returns the process exit status.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace beast
