// Downsampling of the engine's planes to the observation size, with weight tables computed once per game.
#pragma once

#include <cstdint>
#include <vector>

namespace beast {

// Area resampling from a fixed src_w x src_h plane to dst_w x dst_h. An output pixel's footprint is a rectangle of
// (src_w/dst_w) x (src_h/dst_h) source pixels; where the ratio is not an integer a source pixel straddling two
// footprints counts in each by the fraction of its area inside. The 2-D weights are the product of per-axis
// weights, so the work splits into two passes. Columns go first: combining whole source rows is contiguous and
// vectorises, leaving the gather-like horizontal pass only dst_h rows to do instead of src_h.
class AreaResampler {
 public:
  AreaResampler(int src_w, int src_h, int dst_w, int dst_h);

  // dst[y][x] = round(area-weighted mean of the source pixels under the footprint); src and dst are row-major.
  void average(const uint8_t* src, uint8_t* dst);

  // dst[y][x] = 1 if ANY source pixel overlapping the footprint (with positive area) has is_set[src value] != 0,
  // else 0. `is_set` has 256 entries.
  void any(const uint8_t* src, const uint8_t* is_set, uint8_t* dst);

  int src_w() const { return src_w_; }
  int src_h() const { return src_h_; }

 private:
  // Per axis, every output has the same number of taps (`width`, padded with zero weights) starting at first[i],
  // so the inner loops have a fixed trip count.
  struct Axis {
    int width = 0;
    std::vector<int> first;     // [dst] first source index of output i
    std::vector<float> weight;  // [dst][width] fraction of output i's footprint covered by source first[i] + t
  };
  static Axis make_axis(int src, int dst);

  int src_w_, src_h_, dst_w_, dst_h_;
  Axis x_, y_;
  std::vector<float> cols_;       // scratch [dst_h][src_w]: source rows combined vertically
  std::vector<uint8_t> cols_any_;  // scratch [dst_h][src_w] for any()
};

}  // namespace beast
