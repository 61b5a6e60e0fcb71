// Downsampling of the engine's planes to the observation size, with weight tables computed once per game.
#pragma once

#include <cstdint>
#include <vector>

namespace beast {

// Area resampling from a fixed src_w x src_h plane to dst_w x dst_h. An output pixel's footprint is a rectangle of
// (src_w/dst_w) x (src_h/dst_h) source pixels; where the ratio is not an integer a source pixel straddling two
// footprints counts in each by the fraction of its area inside.
//
// Exact integer arithmetic: in units of 1/dst_w (1/dst_h) of a source pixel every per-axis overlap is an integer,
// the x weights of an output sum to src_w and the y weights to src_h, so an output is
// round_half_up(sum(wx * wy * p) / (src_w * src_h)), computed without any rounding error (the division is a
// multiply-shift by a reciprocal that is exact over the whole input range). The 2-D weights are the product of
// per-axis weights, so the work splits into two passes per output row: the source rows under it are combined
// vertically (contiguous, vectorises, uint16 accumulators for src_h <= 257) into one row of column sums, which the
// horizontal pass then combines. Several planes (R, G, B, depth) go through one call, output row by output row:
// each source row is read once, the scratch rows stay in L1, and the horizontal pass loads an output's taps once
// for all planes.
class AreaResampler {
 public:
  AreaResampler(int src_w, int src_h, int dst_w, int dst_h);

  // For each plane i < planes: dst[i][y][x] = round(area-weighted mean of the source pixels of src[i] under the
  // footprint), halves rounded up. Planes are row-major src_w x src_h and dst_w x dst_h.
  void average(const uint8_t* const* src, uint8_t* const* dst, int planes);
  void average(const uint8_t* src, uint8_t* dst) { average(&src, &dst, 1); }

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
    std::vector<int> first;        // [dst] first source index of output i
    std::vector<uint16_t> weight;  // [dst][width] overlap of output i with source first[i] + t, in 1/dst pixels
  };
  static Axis make_axis(int src, int dst);
  static constexpr int kMaxPlanes = 4;  // planes combined per pass (RGB + depth); more take several passes
  template <typename Acc>
  void average_rows(const uint8_t* const* src, uint8_t* const* dst, int planes, Acc* col);

  int src_w_, src_h_, dst_w_, dst_h_;
  Axis x_, y_;
  uint32_t area_;    // src_w * src_h: the sum of all 2-D weights of one output
  uint64_t recip_;   // floor(x / area_) == (x * recip_) >> shift_ for every x the sums can reach
  int shift_;
  std::vector<uint16_t> col16_;  // scratch rows of column sums [kMaxPlanes][src_w] (src_h * 255 fits in 16 bits)
  std::vector<uint32_t> col32_;  // the same for taller sources
  std::vector<uint8_t> col_any_;  // scratch [src_w] for any()
  std::vector<uint8_t> x_any_;    // [dst_w][x width]: 1 where the x weight is positive (the tap counts in any())
};

}  // namespace beast
