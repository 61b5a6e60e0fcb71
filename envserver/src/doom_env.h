// One ViZDoom game: start the engine, step it with frame skip, and write preprocessed observations.
//
// The engine is the `vizdoom` binary from the installed wheel; we drive it with ViZDoom's C++ client library built
// from the same version's sources. Everything ViZDoom-specific stays behind the pimpl, so code that includes this
// header (the server) needs neither ViZDoom's nor Boost's headers.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace beast {

constexpr int kObsSide = 64;  // rgb [3,64,64], depth/enemy [1,64,64], all uint8, channel-major (CHW)
constexpr int kAudioChannels = 2;
constexpr int kAudioSamples = 1024;  // newest samples per channel; audio int16 [2,1024] channel-major
// Doom's sound effects are 11025 Hz lumps, so a higher engine rate adds no information; at this rate the 1024
// newest samples span 93 ms, most of a frame-skip-4 step (114 ms).
constexpr int kAudioSamplingRate = 11025;

// The game variables, in the order written to vars float32[G].
const std::vector<std::string>& var_names();

struct EnvOptions {
  std::string vizdoom_dir;  // the installed wheel's package folder: engine binary `vizdoom`, freedoom2.wad, scenarios/
  std::string scenario;     // built-in name (vizdoom_dir/scenarios/NAME.cfg) or a path to a .cfg
  int frame_skip = 4;
  int doom_skill = 0;  // 1 (easiest) .. 5 (hardest); 0 keeps the scenario's own doom_skill
  std::string screen_resolution = "RES_160X120";
  std::vector<std::string> enemy_classes;  // actor class names (e.g. Zombieman) whose live instances are enemies
  // A step (or close) that takes longer than this is a hung engine: it is SIGKILLed and step() throws EnvCrashed.
  double hang_timeout_s = 60.0;
};

struct ObsView {
  uint8_t* rgb;
  uint8_t* depth;
  uint8_t* enemy;
  int16_t* audio;
  float* vars;
  // Optional, may stay null: on a step that ends an episode, the ENDED episode's last vars (what `vars` would have
  // held without the auto-reset), for reward shaping from variable deltas.
  float* final_vars = nullptr;
};

struct StepResult {
  float reward;
  bool done;
  bool truncated;
  float episode_return;
  int32_t episode_length;
};

class EnvCrashed : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// RAII: the constructor starts the engine, the destructor closes it (and SIGKILLs it if close fails or hangs).
// Not thread-safe: one thread drives one DoomEnv at a time; different DoomEnvs may be stepped concurrently.
class DoomEnv {
 public:
  // Throws std::invalid_argument for a bad option (unknown scenario, resolution, frame skip) and EnvCrashed when
  // the engine cannot be started.
  DoomEnv(const EnvOptions& opts, uint64_t seed);
  ~DoomEnv();
  DoomEnv(const DoomEnv&) = delete;
  DoomEnv& operator=(const DoomEnv&) = delete;

  int num_actions() const;
  std::vector<std::string> action_names() const;  // one discrete action per available button (deadly_corridor: 7)

  // New episode; writes its first observation.
  void reset(const ObsView& out);

  // frame_skip tics with that button held; on episode end (terminal or timeout) it records return/length, starts a
  // new episode and writes THAT episode's first observation (auto-reset, TorchBeast layout). Throws EnvCrashed if
  // the engine died; then the caller destroys and recreates the DoomEnv and reports the episode as ended.
  // Throws std::out_of_range for an action outside [0, num_actions()).
  StepResult step(int action, const ObsView& out);

  pid_t engine_pid() const;  // for supervision; -1 if unknown

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace beast
