#include "doom_env.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <regex>
#include <string_view>
#include <sys/stat.h>
#include <unordered_set>

// ViZDoom's public API, plus the controller (from its sources) for zero-copy access to the shared-memory buffers.
#include "ViZDoom.h"
#include "ViZDoomController.h"
#include "engine_process.h"
#include "preprocess.h"

namespace beast {
namespace {

namespace vz = vizdoom;

struct VarSpec {
  const char* name;
  vz::GameVariable id;
};

// Shaping needs POSITION_X/Y, KILLCOUNT, HITCOUNT, HITS_TAKEN, DAMAGE_TAKEN; the rest are for diagnostics and
// richer shaping (ammo to punish waste, angle/velocity to detect spinning in place, ATTACK_READY for cooldowns).
const std::vector<VarSpec>& var_specs() {
  static const std::vector<VarSpec> specs = {
      {"HEALTH", vz::HEALTH},
      {"ARMOR", vz::ARMOR},
      {"POSITION_X", vz::POSITION_X},
      {"POSITION_Y", vz::POSITION_Y},
      {"POSITION_Z", vz::POSITION_Z},
      {"ANGLE", vz::ANGLE},
      {"VELOCITY_X", vz::VELOCITY_X},
      {"VELOCITY_Y", vz::VELOCITY_Y},
      {"KILLCOUNT", vz::KILLCOUNT},
      {"HITCOUNT", vz::HITCOUNT},
      {"HITS_TAKEN", vz::HITS_TAKEN},
      {"DAMAGECOUNT", vz::DAMAGECOUNT},
      {"DAMAGE_TAKEN", vz::DAMAGE_TAKEN},
      {"SELECTED_WEAPON", vz::SELECTED_WEAPON},
      {"SELECTED_WEAPON_AMMO", vz::SELECTED_WEAPON_AMMO},
      {"ATTACK_READY", vz::ATTACK_READY},
  };
  return specs;
}

// DoomGame with its protected controller exposed. advance() is makeAction(tics) minus DoomGame::updateState's
// per-step copies (screen, depth, labels and audio into fresh vectors, label and player names into strings): we
// read the engine's shared memory directly instead. It keeps the parts of updateState that later calls depend on:
// the reward bookkeeping (updateReward) and lastMapTic, which updateReward uses for the living reward. This mirrors
// ViZDoomGame.cpp of exactly 1.3.2, the version build.sh pins.
class Game : public vz::DoomGame {
 public:
  vz::DoomController& controller() { return *doomController; }

  double advance(unsigned int tics) {
    if (!isRunning()) throw vz::ViZDoomIsNotRunningException();
    if (doomController->isTicPossible()) {
      doomController->tics(tics, true);
      updateReward();
      lastMapTic = doomController->getMapLastTic();
    }
    return lastReward;
  }
};

bool is_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string scenario_config_path(const EnvOptions& opts) {
  const bool is_path = opts.scenario.find('/') != std::string::npos ||
                       (opts.scenario.size() > 4 && opts.scenario.compare(opts.scenario.size() - 4, 4, ".cfg") == 0);
  const std::string path = is_path ? opts.scenario : opts.vizdoom_dir + "/scenarios/" + opts.scenario + ".cfg";
  if (!is_file(path))
    throw std::invalid_argument("scenario '" + opts.scenario + "': no such file " + path +
                                "; give a built-in name (basic, deadly_corridor, ...) or the path of a .cfg file");
  return path;
}

// Fold the 64-bit seed into ViZDoom's 32-bit one without discarding the high half (seeds base+i stay distinct).
unsigned int fold_seed(uint64_t seed) {
  seed ^= seed >> 33;
  seed *= 0xff51afd7ed558ccdULL;
  seed ^= seed >> 33;
  return static_cast<unsigned int>(seed ^ (seed >> 32));
}

constexpr auto kCloseTimeout = std::chrono::seconds(5);

}  // namespace

const std::vector<std::string>& var_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& spec : var_specs()) out.emplace_back(spec.name);
    return out;
  }();
  return names;
}

class DoomEnv::Impl {
 public:
  Impl(const EnvOptions& opts, uint64_t seed);
  ~Impl();

  void reset(const ObsView& out);
  StepResult step(int action, const ObsView& out);
  void write_obs(const ObsView& out);
  void write_vars(float* vars);
  [[noreturn]] void crashed(const char* during, const std::exception& err);

  const EnvOptions opts_;
  Game game_;
  std::vector<vz::Button> buttons_;
  std::vector<double> action_;  // the one-hot button vector handed to ViZDoom, reused every step
  std::unordered_set<std::string_view> enemy_classes_;  // views into opts_.enemy_classes
  std::array<uint8_t, 256> enemy_label_{};               // label value -> 1 if that label is a live enemy this step
  std::unique_ptr<AreaResampler> resample_;
  int audio_frames_ = 0;  // stereo frames in the engine's audio buffer
  std::atomic<pid_t> pid_{-1};
  std::unique_ptr<Watchdog> watchdog_;
  bool fresh_ = true;  // the engine is on the first tic of an episode no step has touched yet
  double episode_return_ = 0.0;
  int32_t episode_length_ = 0;
};

DoomEnv::Impl::Impl(const EnvOptions& opts, uint64_t seed) : opts_(opts) {
  if (opts_.frame_skip <= 0) throw std::invalid_argument("frame_skip must be positive");
  if (opts_.doom_skill < 0 || opts_.doom_skill > 5) throw std::invalid_argument("doom_skill must lie in 0..5");
  const std::string config = scenario_config_path(opts_);
  std::smatch res;
  if (!std::regex_match(opts_.screen_resolution, res, std::regex("RES_([0-9]+)X([0-9]+)")))
    throw std::invalid_argument("screen resolution '" + opts_.screen_resolution + "' is not of the form RES_160X120");

  // The scenario may name its own IWAD; everything else is set after loading it, so the cfg cannot change what
  // the server promises (buffers, format, resolution, engine binary).
  game_.setDoomGamePath(opts_.vizdoom_dir + "/freedoom2.wad");
  if (!game_.loadConfig(config)) throw std::invalid_argument("ViZDoom could not load scenario config " + config);
  if (!game_.setConfig("screen_resolution = " + opts_.screen_resolution) ||
      game_.getScreenWidth() != std::stoi(res[1]) || game_.getScreenHeight() != std::stoi(res[2]))
    throw std::invalid_argument("screen resolution '" + opts_.screen_resolution + "' is not one ViZDoom offers");
  if (opts_.doom_skill != 0) game_.setDoomSkill(opts_.doom_skill);
  game_.setViZDoomPath(opts_.vizdoom_dir + "/vizdoom");
  game_.setMode(vz::PLAYER);
  game_.setWindowVisible(false);
  game_.setScreenFormat(vz::CRCGCB);  // planar: each colour plane resamples as-is into the CHW observation
  game_.setDepthBufferEnabled(true);
  game_.setLabelsBufferEnabled(true);
  game_.setObjectsInfoEnabled(false);
  game_.setSectorsInfoEnabled(false);
  game_.setAutomapBufferEnabled(false);
  game_.setAudioBufferEnabled(true);
  game_.setAudioSamplingRate(vz::SR_11025);
  // The engine's buffer holds whole tics, refreshed every tic whether or not the state is updated; enough of them
  // that the newest kAudioSamples are always real samples (11025/35 = 315 per tic -> 4 tics = 1260 frames).
  const int samples_per_tic = kAudioSamplingRate / 35;
  game_.setAudioBufferSize((kAudioSamples + samples_per_tic - 1) / samples_per_tic);
  // The engine dlopens the system's libopenal.so.1 (Debian: libopenal1). Its EFX path (reverb, underwater low-pass)
  // aborts the engine in openal-soft 1.19.1 (Debian 12) on the assertion `gain > 0.00001f` in
  // BiquadFilter_setParams; without EFX the dry mix is what the agent hears anyway.
  game_.addGameArgs("+snd_efx 0");
  game_.setSeed(fold_seed(seed));

  buttons_ = game_.getAvailableButtons();
  if (buttons_.empty()) throw std::invalid_argument("scenario " + config + " has no available buttons");
  action_.assign(buttons_.size(), 0.0);
  for (const auto& name : opts_.enemy_classes) enemy_classes_.insert(name);

  try {
    game_.init();
  } catch (const std::exception& err) {
    throw EnvCrashed(std::string("ViZDoom engine failed to start (") + opts_.vizdoom_dir + "/vizdoom): " + err.what());
  }
  pid_ = find_engine_pid(game_.getInstanceId());
  if (!game_.controller().isOpenALSoundInitialized())
    throw EnvCrashed("ViZDoom could not initialise OpenAL, so the audio buffer would stay silent; install the "
                     "Debian package libopenal1 (make apt)");
  watchdog_ = std::make_unique<Watchdog>(
      std::chrono::milliseconds(static_cast<int64_t>(opts_.hang_timeout_s * 1000)), [this] { kill_child(pid_); });

  resample_ = std::make_unique<AreaResampler>(game_.getScreenWidth(), game_.getScreenHeight(), kObsSide, kObsSide);
  audio_frames_ = game_.getAudioSamplesPerTic() * game_.getAudioBufferSize();
  if (audio_frames_ < kAudioSamples)
    throw EnvCrashed("ViZDoom audio buffer holds " + std::to_string(audio_frames_) + " samples, fewer than " +
                     std::to_string(kAudioSamples));
}

DoomEnv::Impl::~Impl() {
  watchdog_.reset();  // stop it first: it must not kill a pid that close() below is about to reap
  // close() asks the engine to quit and then joins the thread waiting on the engine process, which would block
  // forever on a hung engine; a short-lived watchdog SIGKILLs it so the join returns.
  Watchdog closer(kCloseTimeout, [this] { kill_child(pid_); });
  closer.arm();
  try {
    game_.close();
  } catch (...) {
    kill_child(pid_);  // the controller could not finish closing; make sure no engine outlives us
  }
  closer.disarm();
}

void DoomEnv::Impl::crashed(const char* during, const std::exception& err) {
  const std::string why = watchdog_->fired()
                              ? "hung for more than " + std::to_string(opts_.hang_timeout_s) + " s and was killed"
                              : std::string("died: ") + err.what();
  throw EnvCrashed(std::string("ViZDoom engine (pid ") + std::to_string(pid_) + ") " + why + " during " + during);
}

void DoomEnv::Impl::reset(const ObsView& out) {
  try {
    watchdog_->arm();
    if (!fresh_) game_.newEpisode();
    watchdog_->disarm();
  } catch (const std::exception& err) {
    crashed("reset", err);
  }
  fresh_ = true;
  episode_return_ = 0.0;
  episode_length_ = 0;
  write_obs(out);
}

StepResult DoomEnv::Impl::step(int action, const ObsView& out) {
  if (action < 0 || action >= static_cast<int>(buttons_.size()))
    throw std::out_of_range("action " + std::to_string(action) + " outside [0, " + std::to_string(buttons_.size()) +
                            ")");
  StepResult result{0.f, false, false, 0.f, 0};
  bool finished = false;
  try {
    watchdog_->arm();
    action_[action] = 1.0;
    game_.setAction(action_);
    action_[action] = 0.0;
    result.reward = static_cast<float>(game_.advance(static_cast<unsigned int>(opts_.frame_skip)));
    finished = game_.isEpisodeFinished();
    watchdog_->disarm();
  } catch (const std::exception& err) {
    crashed("step", err);
  }
  fresh_ = false;
  episode_return_ += result.reward;
  ++episode_length_;
  if (!finished) {
    write_obs(out);
    return result;
  }
  result.done = true;
  // Finished but the map did not end (no death, no exit): only the scenario's episode_timeout stopped it.
  result.truncated = !game_.controller().isMapEnded();
  result.episode_return = static_cast<float>(episode_return_);
  result.episode_length = episode_length_;
  if (out.final_vars != nullptr) write_vars(out.final_vars);  // the shared memory still holds the last tic's state
  reset(out);
  return result;
}

void DoomEnv::Impl::write_vars(float* vars) {
  auto& ctl = game_.controller();
  const auto& specs = var_specs();
  for (size_t i = 0; i < specs.size(); ++i) vars[i] = static_cast<float>(ctl.getGameVariable(specs[i].id));
}

void DoomEnv::Impl::write_obs(const ObsView& out) {
  auto& ctl = game_.controller();
  const int w = resample_->src_w(), h = resample_->src_h();
  const size_t plane = static_cast<size_t>(w) * h, out_plane = static_cast<size_t>(kObsSide) * kObsSide;

  // One pass over R, G, B (CRCGCB: three planes) and depth, row by row.
  const uint8_t* screen = ctl.getScreenBuffer();
  const uint8_t* const src[] = {screen, screen + plane, screen + 2 * plane, ctl.getDepthBuffer()};
  uint8_t* const dst[] = {out.rgb, out.rgb + out_plane, out.rgb + 2 * out_plane, out.depth};
  resample_->average(src, dst, 4);

  // Live enemies only. ViZDoom 1.3.2 names a labelled actor "Dead" + class (category "Gore") once it has
  // MF_CORPSE or MF6_KILLED, i.e. from the moment it is killed, death animation included (viz_game.cpp,
  // VIZ_CopyActorName). So an exact class-name match is "alive", and corpses, the player ("DoomPlayer"), items,
  // blood and puffs never match a monster class.
  const vz::SMGameState* state = ctl.getGameState();
  enemy_label_.fill(0);
  for (unsigned int i = 0; i < state->LABEL_COUNT; ++i)
    if (enemy_classes_.count(std::string_view(state->LABEL[i].objectName)) != 0) enemy_label_[state->LABEL[i].value] = 1;
  // A 64x64 pixel is an enemy if ANY source pixel under it is one, not a majority: at 160x120 a cell covers ~4.7
  // source pixels and a distant Zombieman is only a few pixels wide, so a majority vote would erase exactly the
  // enemies that are hardest to see; over-marking by under one output pixel at the edges is harmless for gating.
  resample_->any(ctl.getLabelsBuffer(), enemy_label_.data(), out.enemy);

  // The engine keeps interleaved stereo frames, oldest first; take the newest kAudioSamples, channel-major.
  const int16_t* audio = ctl.getAudioBuffer() + 2 * static_cast<size_t>(audio_frames_ - kAudioSamples);
  for (int i = 0; i < kAudioSamples; ++i) {
    out.audio[i] = audio[2 * i];
    out.audio[kAudioSamples + i] = audio[2 * i + 1];
  }

  write_vars(out.vars);
}

DoomEnv::DoomEnv(const EnvOptions& opts, uint64_t seed) : impl_(std::make_unique<Impl>(opts, seed)) {}
DoomEnv::~DoomEnv() = default;

int DoomEnv::num_actions() const { return static_cast<int>(impl_->buttons_.size()); }

std::vector<std::string> DoomEnv::action_names() const {
  std::vector<std::string> names;
  for (auto button : impl_->buttons_) names.push_back(vz::buttonToString(button));
  return names;
}

void DoomEnv::reset(const ObsView& out) { impl_->reset(out); }
StepResult DoomEnv::step(int action, const ObsView& out) { return impl_->step(action, out); }
pid_t DoomEnv::engine_pid() const { return impl_->pid_; }

}  // namespace beast
