#include "preprocess.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace beast {

AreaResampler::Axis AreaResampler::make_axis(int src, int dst) {
  // Exact rational footprints: output i covers [i*src/dst, (i+1)*src/dst) in source pixel units. Working in units
  // of 1/dst keeps the boundaries integers, so pixels exactly on a boundary get weight exactly 0 and are left out.
  Axis axis;
  std::vector<std::vector<float>> taps(dst);
  for (int i = 0; i < dst; ++i) {
    const long lo = static_cast<long>(i) * src, hi = static_cast<long>(i + 1) * src;
    axis.first.push_back(static_cast<int>(lo / dst));
    for (long j = lo / dst; j * dst < hi; ++j) {
      const long overlap = std::min(hi, (j + 1) * dst) - std::max(lo, j * dst);
      taps[i].push_back(static_cast<float>(overlap) / static_cast<float>(src));
    }
    axis.width = std::max(axis.width, static_cast<int>(taps[i].size()));
  }
  // Pad to a common width; near the far edge shift the window left instead, so it never reads past the plane.
  axis.weight.assign(static_cast<size_t>(dst) * axis.width, 0.f);
  for (int i = 0; i < dst; ++i) {
    const int shift = std::max(0, axis.first[i] + axis.width - src);
    axis.first[i] -= shift;
    for (size_t t = 0; t < taps[i].size(); ++t) axis.weight[static_cast<size_t>(i) * axis.width + shift + t] = taps[i][t];
  }
  return axis;
}

AreaResampler::AreaResampler(int src_w, int src_h, int dst_w, int dst_h)
    : src_w_(src_w), src_h_(src_h), dst_w_(dst_w), dst_h_(dst_h) {
  if (src_w < dst_w || src_h < dst_h || dst_w <= 0 || dst_h <= 0)
    throw std::invalid_argument("AreaResampler only downsamples; got " + std::to_string(src_w) + "x" +
                                std::to_string(src_h) + " -> " + std::to_string(dst_w) + "x" + std::to_string(dst_h));
  x_ = make_axis(src_w, dst_w);
  y_ = make_axis(src_h, dst_h);
  cols_.resize(static_cast<size_t>(dst_h) * src_w);
  cols_any_.resize(static_cast<size_t>(dst_h) * src_w);
}

void AreaResampler::average(const uint8_t* src, uint8_t* dst) {
  const int sw = src_w_;
  for (int oy = 0; oy < dst_h_; ++oy) {
    float* acc = cols_.data() + static_cast<size_t>(oy) * sw;
    const float* w = y_.weight.data() + static_cast<size_t>(oy) * y_.width;
    const uint8_t* row = src + static_cast<size_t>(y_.first[oy]) * sw;
    for (int x = 0; x < sw; ++x) acc[x] = w[0] * row[x];
    for (int t = 1; t < y_.width; ++t) {
      row += sw;
      for (int x = 0; x < sw; ++x) acc[x] += w[t] * row[x];
    }
  }
  const int taps = x_.width;
  for (int oy = 0; oy < dst_h_; ++oy) {
    const float* in = cols_.data() + static_cast<size_t>(oy) * sw;
    uint8_t* out = dst + static_cast<size_t>(oy) * dst_w_;
    for (int ox = 0; ox < dst_w_; ++ox) {
      const float* w = x_.weight.data() + static_cast<size_t>(ox) * taps;
      const float* p = in + x_.first[ox];
      float v = 0.f;
      for (int t = 0; t < taps; ++t) v += w[t] * p[t];
      // Weights sum to 1 up to rounding, so a mean of uint8 values cannot leave [0, 255] by more than an ulp.
      out[ox] = static_cast<uint8_t>(std::min(v + 0.5f, 255.f));
    }
  }
}

void AreaResampler::any(const uint8_t* src, const uint8_t* is_set, uint8_t* dst) {
  const int sw = src_w_;
  for (int oy = 0; oy < dst_h_; ++oy) {
    uint8_t* acc = cols_any_.data() + static_cast<size_t>(oy) * sw;
    std::fill(acc, acc + sw, uint8_t{0});
    for (int t = 0; t < y_.width; ++t) {
      if (y_.weight[static_cast<size_t>(oy) * y_.width + t] == 0.f) continue;  // padding, or no area in common
      const uint8_t* row = src + static_cast<size_t>(y_.first[oy] + t) * sw;
      for (int x = 0; x < sw; ++x) acc[x] |= is_set[row[x]];
    }
  }
  const int taps = x_.width;
  for (int oy = 0; oy < dst_h_; ++oy) {
    const uint8_t* in = cols_any_.data() + static_cast<size_t>(oy) * sw;
    uint8_t* out = dst + static_cast<size_t>(oy) * dst_w_;
    for (int ox = 0; ox < dst_w_; ++ox) {
      const float* w = x_.weight.data() + static_cast<size_t>(ox) * taps;
      uint8_t hit = 0;
      for (int t = 0; t < taps; ++t) hit |= static_cast<uint8_t>(w[t] != 0.f) & in[x_.first[ox] + t];
      out[ox] = hit != 0;
    }
  }
}

}  // namespace beast
