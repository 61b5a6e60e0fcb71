// Tests of one game against the real engine, and of the resampler against a brute-force definition.
//
//   doom_env_test VIZDOOM_DIR [TEST_NAME]
//
// VIZDOOM_DIR is the installed wheel's package folder (python -c 'import vizdoom, os;
// print(os.path.dirname(vizdoom.__file__))'). Exit status 0 when every check passes. tests/envs/
// test_engine_doom_env.py runs this from pytest.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "doom_env.h"
#include "preprocess.h"

namespace {

int failures = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "  FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                          \
    }                                                                      \
  } while (0)

std::string vizdoom_dir;

// One observation, owning its arrays.
struct Obs {
  std::vector<uint8_t> rgb = std::vector<uint8_t>(3 * beast::kObsSide * beast::kObsSide);
  std::vector<uint8_t> depth = std::vector<uint8_t>(beast::kObsSide * beast::kObsSide);
  std::vector<uint8_t> enemy = std::vector<uint8_t>(beast::kObsSide * beast::kObsSide);
  std::vector<int16_t> audio = std::vector<int16_t>(beast::kAudioChannels * beast::kAudioSamples);
  std::vector<float> vars = std::vector<float>(beast::var_names().size());
  std::vector<float> final_vars = std::vector<float>(beast::var_names().size());
  beast::ObsView view() {
    return {rgb.data(), depth.data(), enemy.data(), audio.data(), vars.data(), final_vars.data()};
  }
  bool operator==(const Obs& o) const {
    return rgb == o.rgb && depth == o.depth && enemy == o.enemy && audio == o.audio &&
           std::memcmp(vars.data(), o.vars.data(), vars.size() * sizeof(float)) == 0;
  }
};

beast::EnvOptions options(const std::string& scenario) {
  beast::EnvOptions opts;
  opts.vizdoom_dir = vizdoom_dir;
  opts.scenario = scenario;
  opts.enemy_classes = {"Zombieman", "ShotgunGuy", "ChaingunGuy", "Cacodemon"};
  return opts;
}

int var_index(const std::string& name) {
  const auto& names = beast::var_names();
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<int>(i);
  return -1;
}

bool alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

// --- resampler ------------------------------------------------------------------------------------------------

// Brute force from the definition: integrate the piecewise-constant source over the output footprint on a grid
// fine enough to be exact (dst_w * dst_h subcells per source pixel).
void test_area_average_matches_brute_force() {
  const std::vector<std::array<int, 2>> sizes = {{160, 120}, {320, 240}, {200, 125}, {64, 64}, {128, 128}};
  std::mt19937 rng(1);
  for (auto [w, h] : sizes) {
    const int side = 16;  // small output keeps the brute force cheap; the tables are built the same for 64
    std::vector<uint8_t> src(static_cast<size_t>(w) * h);
    for (auto& v : src) v = static_cast<uint8_t>(rng() % 256);
    beast::AreaResampler r(w, h, side, side);
    std::vector<uint8_t> dst(side * side);
    r.average(src.data(), dst.data());
    int worst = 0;
    for (int oy = 0; oy < side; ++oy)
      for (int ox = 0; ox < side; ++ox) {
        // Footprint in units of 1/side source pixels: x in [ox*w, (ox+1)*w), y in [oy*h, (oy+1)*h).
        double sum = 0;
        for (long fy = static_cast<long>(oy) * h; fy < static_cast<long>(oy + 1) * h; ++fy)
          for (long fx = static_cast<long>(ox) * w; fx < static_cast<long>(ox + 1) * w; ++fx)
            sum += src[(fy / side) * w + fx / side];
        const double mean = sum / (static_cast<double>(w) * h);
        worst = std::max(worst, std::abs(static_cast<int>(std::lround(mean)) - dst[oy * side + ox]));
      }
    CHECK(worst == 0);  // exact integer arithmetic: the definition's mean, halves rounded up (as lround)
  }
  // A constant image stays exactly constant (weights sum to 1).
  std::vector<uint8_t> flat(160 * 120, 255), out(64 * 64);
  beast::AreaResampler(160, 120, 64, 64).average(flat.data(), out.data());
  for (auto v : out) CHECK(v == 255);
}

// Planes resampled together (R, G, B, depth in one pass; more than fit one pass) give each plane's own result.
void test_average_of_several_planes_equals_each_plane_alone() {
  std::mt19937 rng(2);
  beast::AreaResampler r(160, 120, 64, 64);
  constexpr int kPlanes = 6;
  std::vector<std::vector<uint8_t>> src(kPlanes, std::vector<uint8_t>(160 * 120)), together(kPlanes), alone(kPlanes);
  const uint8_t* srcs[kPlanes];
  uint8_t* dsts[kPlanes];
  for (int p = 0; p < kPlanes; ++p) {
    for (auto& v : src[p]) v = static_cast<uint8_t>(rng() % 256);
    together[p].assign(64 * 64, 0);
    alone[p].assign(64 * 64, 0);
    srcs[p] = src[p].data();
    dsts[p] = together[p].data();
  }
  r.average(srcs, dsts, kPlanes);
  for (int p = 0; p < kPlanes; ++p) {
    r.average(src[p].data(), alone[p].data());
    CHECK(together[p] == alone[p]);
  }
}

// Both ways of marking: a few enemy labels (byte compares) and many (table look-ups); value 3 is never an enemy.
void test_any_marks_cells_touching_a_single_pixel() {
  beast::AreaResampler r(160, 120, 64, 64);
  for (int labels : {1, 40}) {
    std::array<uint8_t, 256> lut{};
    for (int v = 7; v < 7 + labels; ++v) lut[v] = 1;
    for (int y : {0, 17, 119})
      for (int x : {0, 2, 3, 81, 159}) {
        std::vector<uint8_t> src(160 * 120, 3), dst(64 * 64);
        src[y * 160 + x] = 7;
        r.any(src.data(), lut.data(), dst.data());
        int count = 0;
        for (int oy = 0; oy < 64; ++oy)
          for (int ox = 0; ox < 64; ++ox) {
            // Does source pixel [x, x+1) x [y, y+1) overlap footprint ox, oy with positive area?
            const bool overlap_x = x * 64 < (ox + 1) * 160 && (x + 1) * 64 > ox * 160;
            const bool overlap_y = y * 64 < (oy + 1) * 120 && (y + 1) * 64 > oy * 120;
            CHECK(dst[oy * 64 + ox] == (overlap_x && overlap_y ? 1 : 0));
            count += dst[oy * 64 + ox];
          }
        CHECK(count >= 1 && count <= 4);
      }
  }
}

// --- one game -------------------------------------------------------------------------------------------------

void test_deadly_corridor_layout_and_signals() {
  beast::DoomEnv env(options("deadly_corridor"), 42);
  CHECK(env.num_actions() == 7);
  CHECK(env.action_names().size() == 7);
  CHECK(env.action_names()[2] == "ATTACK");
  CHECK(alive(env.engine_pid()));
  Obs obs;
  env.reset(obs.view());
  CHECK(obs.vars[var_index("HEALTH")] == 100.f);
  // The corridor's far end is visible from the start: some live enemy pixels, and depth/rgb are not blank.
  int enemy_pixels = 0;
  for (auto v : obs.enemy) {
    CHECK(v == 0 || v == 1);
    enemy_pixels += v;
  }
  std::printf("  deadly_corridor first obs: %d enemy pixels of 4096\n", enemy_pixels);
  CHECK(enemy_pixels > 0);
  CHECK(*std::max_element(obs.rgb.begin(), obs.rgb.end()) > 0);
  CHECK(*std::max_element(obs.depth.begin(), obs.depth.end()) > *std::min_element(obs.depth.begin(), obs.depth.end()));
  // Shooting makes noise: the pistol is audible in the newest samples after ATTACK.
  int peak = 0;
  for (int i = 0; i < 3; ++i) {
    env.step(2, obs.view());
    for (auto s : obs.audio) peak = std::max(peak, std::abs(static_cast<int>(s)));
  }
  std::printf("  audio peak after ATTACK: %d\n", peak);
  CHECK(peak > 100);
}

void test_basic_timeout_is_truncated_with_return_and_length() {
  beast::DoomEnv env(options("basic"), 3);
  Obs obs;
  env.reset(obs.view());
  // MOVE_LEFT only never kills the Cacodemon: the 300-tic timeout ends the episode after 75 steps of 4 tics.
  beast::StepResult r{};
  int steps = 0;
  double sum = 0;
  do {
    r = env.step(0, obs.view());
    sum += r.reward;
    ++steps;
    if (!r.done) CHECK(r.episode_length == 0 && r.episode_return == 0.f);
  } while (!r.done && steps < 200);
  std::printf("  basic MOVE_LEFT: done after %d steps, return %.1f, truncated %d\n", steps, r.episode_return,
              r.truncated);
  CHECK(r.done && r.truncated);
  CHECK(steps == 75 && r.episode_length == 75);
  CHECK(std::abs(r.episode_return - sum) < 1e-3);
  CHECK(r.episode_return == -300.f);  // living_reward -1 per tic
  // final_vars holds the ended episode, vars the new one's first state.
  CHECK(obs.final_vars[var_index("POSITION_Y")] != obs.vars[var_index("POSITION_Y")]);
  // The next episode counts from zero again.
  r = env.step(1, obs.view());
  CHECK(!r.done);
}

void test_basic_kill_is_terminal_not_truncated() {
  beast::DoomEnv env(options("basic"), 5);
  Obs obs;
  env.reset(obs.view());
  bool saw_enemy = false;
  beast::StepResult r{};
  // Aim by the enemy mask: move toward the Cacodemon's columns, shoot when it is centred.
  for (int i = 0; i < 300 && !r.done; ++i) {
    double cx = 0;
    int n = 0;
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x)
        if (obs.enemy[y * 64 + x]) cx += x, ++n;
    saw_enemy |= n > 0;
    int action = 2;
    if (n > 0 && cx / n < 30) action = 0;
    if (n > 0 && cx / n > 33) action = 1;
    r = env.step(action, obs.view());
  }
  CHECK(saw_enemy);
  CHECK(r.done && !r.truncated);
  std::printf("  basic aimed by the mask: done after %d steps, return %.1f\n", r.episode_length, r.episode_return);
  CHECK(r.episode_return > 0.f);  // +106 for the kill minus living reward
  CHECK(obs.final_vars[var_index("KILLCOUNT")] == 1.f);
}

// Two games, same seed, same actions: byte-identical observations, episode ends included.
void test_same_seed_same_actions_identical_observations(const std::string& scenario, int steps) {
  beast::DoomEnv a(options(scenario), 7), b(options(scenario), 7);
  Obs oa, ob;
  a.reset(oa.view());
  b.reset(ob.view());
  CHECK(oa == ob);
  std::mt19937 rng(11);
  int first_diff = -1, episodes = 0;
  bool audio_nonzero = false;
  for (int i = 0; i < steps; ++i) {
    const int action = static_cast<int>(rng() % a.num_actions());
    const auto ra = a.step(action, oa.view()), rb = b.step(action, ob.view());
    episodes += ra.done;
    for (auto s : oa.audio) audio_nonzero |= s != 0;
    const bool same = oa == ob && ra.reward == rb.reward && ra.done == rb.done && ra.truncated == rb.truncated &&
                      ra.episode_return == rb.episode_return && ra.episode_length == rb.episode_length;
    if (!same && first_diff < 0) {
      first_diff = i;
      std::fprintf(stderr, "  %s diverged at step %d: rgb %d depth %d enemy %d audio %d vars %d\n",
                   scenario.c_str(), i, oa.rgb == ob.rgb, oa.depth == ob.depth, oa.enemy == ob.enemy,
                   oa.audio == ob.audio, oa.vars == ob.vars);
    }
  }
  std::printf("  %s determinism: %d steps, %d episode ends, audio heard %d, first difference %d\n",
              scenario.c_str(), steps, episodes, audio_nonzero, first_diff);
  CHECK(first_diff < 0);
  CHECK(audio_nonzero);
}

void test_different_seeds_differ() {
  beast::DoomEnv a(options("deadly_corridor"), 1), b(options("deadly_corridor"), 2);
  Obs oa, ob;
  a.reset(oa.view());
  b.reset(ob.view());
  bool differ = false;
  for (int i = 0; i < 60 && !differ; ++i) {
    a.step(3, oa.view());
    b.step(3, ob.view());
    differ = !(oa == ob);
  }
  CHECK(differ);
}

void test_killed_engine_throws_env_crashed_and_cleans_up() {
  pid_t pid;
  {
    beast::DoomEnv env(options("basic"), 1);
    Obs obs;
    env.reset(obs.view());
    pid = env.engine_pid();
    CHECK(alive(pid));
    kill(pid, SIGKILL);
    bool crashed = false;
    try {
      for (int i = 0; i < 3; ++i) env.step(0, obs.view());
    } catch (const beast::EnvCrashed& e) {
      crashed = true;
      std::printf("  killed engine: %s\n", e.what());
    }
    CHECK(crashed);
  }
  CHECK(!alive(pid));
}

void test_hung_engine_is_killed_by_the_watchdog() {
  auto opts = options("basic");
  opts.hang_timeout_s = 1.0;
  beast::DoomEnv env(opts, 1);
  Obs obs;
  env.reset(obs.view());
  const pid_t pid = env.engine_pid();
  kill(pid, SIGSTOP);  // what a wedged engine looks like to us: it never answers
  const auto t0 = std::chrono::steady_clock::now();
  bool crashed = false;
  try {
    env.step(0, obs.view());
  } catch (const beast::EnvCrashed& e) {
    crashed = true;
    std::printf("  hung engine: %s\n", e.what());
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(crashed);
  CHECK(waited < 5.0);
  CHECK(!alive(pid));
}

void test_destructor_does_not_hang_on_a_stopped_engine() {
  pid_t pid;
  const auto t0 = std::chrono::steady_clock::now();
  {
    beast::DoomEnv env(options("basic"), 1);
    pid = env.engine_pid();
    kill(pid, SIGSTOP);
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("  destroyed with a stopped engine in %.1f s\n", waited);
  CHECK(waited < 15.0);
  CHECK(!alive(pid));
}

void test_engine_is_in_our_process_group() {
  beast::DoomEnv env(options("basic"), 1);
  CHECK(getpgid(env.engine_pid()) == getpgrp());
  CHECK(getsid(env.engine_pid()) == getsid(0));
}

void test_bad_options_are_rejected() {
  auto expect_invalid = [](beast::EnvOptions opts) {
    try {
      beast::DoomEnv env(opts, 0);
    } catch (const std::invalid_argument&) {
      return true;
    }
    return false;
  };
  auto opts = options("no_such_scenario");
  CHECK(expect_invalid(opts));
  opts = options("basic");
  opts.screen_resolution = "RES_123X45";
  CHECK(expect_invalid(opts));
  opts = options("basic");
  opts.frame_skip = 0;
  CHECK(expect_invalid(opts));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s VIZDOOM_DIR [TEST_NAME]\n", argv[0]);
    return 2;
  }
  vizdoom_dir = argv[1];
  const std::vector<std::pair<std::string, std::function<void()>>> tests = {
      {"area_average_matches_brute_force", test_area_average_matches_brute_force},
      {"average_of_several_planes_equals_each_plane_alone", test_average_of_several_planes_equals_each_plane_alone},
      {"any_marks_cells_touching_a_single_pixel", test_any_marks_cells_touching_a_single_pixel},
      {"bad_options_are_rejected", test_bad_options_are_rejected},
      {"deadly_corridor_layout_and_signals", test_deadly_corridor_layout_and_signals},
      {"basic_timeout_is_truncated_with_return_and_length", test_basic_timeout_is_truncated_with_return_and_length},
      {"basic_kill_is_terminal_not_truncated", test_basic_kill_is_terminal_not_truncated},
      {"determinism_basic", [] { test_same_seed_same_actions_identical_observations("basic", 200); }},
      {"determinism_deadly_corridor", [] { test_same_seed_same_actions_identical_observations("deadly_corridor", 400); }},
      {"different_seeds_differ", test_different_seeds_differ},
      {"engine_is_in_our_process_group", test_engine_is_in_our_process_group},
      {"killed_engine_throws_env_crashed_and_cleans_up", test_killed_engine_throws_env_crashed_and_cleans_up},
      {"hung_engine_is_killed_by_the_watchdog", test_hung_engine_is_killed_by_the_watchdog},
      {"destructor_does_not_hang_on_a_stopped_engine", test_destructor_does_not_hang_on_a_stopped_engine},
  };
  int ran = 0;
  for (const auto& [name, fn] : tests) {
    if (argc > 2 && name != argv[2]) continue;
    std::printf("%s\n", name.c_str());
    std::fflush(stdout);
    const int before = failures;
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "  FAILED: unexpected exception: %s\n", e.what());
      ++failures;
    }
    std::printf("  %s\n", failures == before ? "ok" : "FAILED");
    ++ran;
  }
  if (ran == 0) {
    std::fprintf(stderr, "no test named %s\n", argv[2]);
    return 2;
  }
  std::printf("%d test(s), %d failed check(s)\n", ran, failures);
  return failures == 0 ? 0 : 1;
}
