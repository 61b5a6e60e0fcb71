// Steps/s of K DoomEnvs stepped by K threads with random actions: the engine side alone, no server, no transport.
//   doom_env_bench VIZDOOM_DIR SCENARIO K SECONDS
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "doom_env.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s VIZDOOM_DIR SCENARIO K SECONDS\n", argv[0]);
    return 2;
  }
  const int k = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  beast::EnvOptions opts;
  opts.vizdoom_dir = argv[1];
  opts.scenario = argv[2];
  opts.enemy_classes = {"Zombieman", "ShotgunGuy", "ChaingunGuy"};
  std::atomic<bool> go{false}, stop{false};
  std::vector<std::atomic<long>> counts(k);
  std::vector<std::thread> threads;
  for (int i = 0; i < k; ++i)
    threads.emplace_back([&, i] {
      beast::DoomEnv env(opts, i);
      std::vector<uint8_t> rgb(3 * 64 * 64), depth(64 * 64), enemy(64 * 64);
      std::vector<int16_t> audio(2 * 1024);
      std::vector<float> vars(beast::var_names().size());
      beast::ObsView view{rgb.data(), depth.data(), enemy.data(), audio.data(), vars.data()};
      env.reset(view);
      std::mt19937 rng(i);
      while (!go) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      while (!stop) {
        env.step(static_cast<int>(rng() % env.num_actions()), view);
        ++counts[i];
      }
    });
  std::this_thread::sleep_for(std::chrono::seconds(3));  // engines start
  go = true;
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm-up
  auto total = [&] { long s = 0; for (auto& c : counts) s += c; return s; };
  auto self_cpu = [] {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);  // this process only: preprocessing and client-library work, not the engines
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + 1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  };
  const long before = total();
  const double cpu0 = self_cpu();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const long steps = total() - before;
  const double cpu = self_cpu() - cpu0;
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& t : threads) t.join();
  std::printf("%s K=%d: %.1f steps/s, %.3f ms CPU per step in this process (engines excluded)\n", argv[2], k,
              steps / dt, 1e3 * cpu / steps);
  return 0;
}
