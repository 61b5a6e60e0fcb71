// Nanoseconds per observation of the resampler alone: R, G, B and depth averaged, the enemy mask from labels.
//   preprocess_bench [ITERATIONS]
// Sources rotate through 64 frames (6 MB, more than the L2 cache), as a game's freshly written buffers would be.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "preprocess.h"

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 20000;
  constexpr int kW = 160, kH = 120, kSide = 64, kFrames = 64;
  constexpr size_t kPlane = static_cast<size_t>(kW) * kH, kOut = static_cast<size_t>(kSide) * kSide;
  std::mt19937 rng(1);
  std::vector<uint8_t> screens(kFrames * 3 * kPlane), depths(kFrames * kPlane), labels(kFrames * kPlane);
  for (auto& v : screens) v = static_cast<uint8_t>(rng());
  for (auto& v : depths) v = static_cast<uint8_t>(rng());
  for (auto& v : labels) v = static_cast<uint8_t>(rng() % 8);
  std::vector<uint8_t> rgb(3 * kOut), depth(kOut), enemy(kOut), is_enemy(256, 0);
  is_enemy[3] = 1;  // one enemy label visible: the mask path is taken
  beast::AreaResampler r(kW, kH, kSide, kSide);
  unsigned checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) {
    const size_t f = static_cast<size_t>(i % kFrames);
    const uint8_t* screen = screens.data() + f * 3 * kPlane;
    const uint8_t* const src[] = {screen, screen + kPlane, screen + 2 * kPlane, depths.data() + f * kPlane};
    uint8_t* const dst[] = {rgb.data(), rgb.data() + kOut, rgb.data() + 2 * kOut, depth.data()};
    r.average(src, dst, 4);
    r.any(labels.data() + f * kPlane, is_enemy.data(), enemy.data());
    checksum += rgb[i % (3 * kOut)] + depth[i % kOut] + enemy[i % kOut];
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%.0f ns per observation (4 averaged planes + enemy mask, %dx%d -> %dx%d), checksum %u\n",
              ns / iterations, kW, kH, kSide, kSide, checksum);
  return 0;
}
