// One game and the thread that drives it: the socket thread hands it reset/step commands, the worker runs them on
// its own DoomEnv (recreating the game when its engine dies) and reports through the completion queue.
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

#include "completion_queue.h"
#include "doom_env.h"
#include "protocol.h"
#include "server.h"
#include "server_util.h"

namespace beast {

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
        rgb_(proto::result_field(proto::Field::kRgb).bytes_per_env(0)),
        depth_(proto::result_field(proto::Field::kDepth).bytes_per_env(0)),
        enemy_(proto::result_field(proto::Field::kEnemy).bytes_per_env(0)),
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

}  // namespace beast
