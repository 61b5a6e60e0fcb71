#include "preprocess.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace beast {

AreaResampler::Axis AreaResampler::make_axis(int src, int dst) {
  // Exact rational footprints: output i covers [i*src/dst, (i+1)*src/dst) in source pixel units. Working in units
  // of 1/dst keeps the boundaries integers, so pixels exactly on a boundary get weight exactly 0 and are left out.
  Axis axis;
  std::vector<std::vector<uint16_t>> taps(dst);
  for (int i = 0; i < dst; ++i) {
    const long lo = static_cast<long>(i) * src, hi = static_cast<long>(i + 1) * src;
    axis.first.push_back(static_cast<int>(lo / dst));
    for (long j = lo / dst; j * dst < hi; ++j) {
      const long overlap = std::min(hi, (j + 1) * dst) - std::max(lo, j * dst);  // in (0, dst]
      taps[i].push_back(static_cast<uint16_t>(overlap));
    }
    axis.width = std::max(axis.width, static_cast<int>(taps[i].size()));
  }
  // Pad to a common width; near the far edge shift the window left instead, so it never reads past the plane.
  axis.weight.assign(static_cast<size_t>(dst) * axis.width, 0);
  for (int i = 0; i < dst; ++i) {
    const int shift = std::max(0, axis.first[i] + axis.width - src);
    axis.first[i] -= shift;
    for (size_t t = 0; t < taps[i].size(); ++t) axis.weight[static_cast<size_t>(i) * axis.width + shift + t] = taps[i][t];
  }
  return axis;
}

AreaResampler::AreaResampler(int src_w, int src_h, int dst_w, int dst_h)
    : src_w_(src_w), src_h_(src_h), dst_w_(dst_w), dst_h_(dst_h) {
  if (src_w < dst_w || src_h < dst_h || dst_w <= 0 || dst_h <= 0 || dst_w > 65535 || dst_h > 65535)
    throw std::invalid_argument("AreaResampler only downsamples; got " + std::to_string(src_w) + "x" +
                                std::to_string(src_h) + " -> " + std::to_string(dst_w) + "x" + std::to_string(dst_h));
  // Sums reach 255 * area + area / 2 < 2^32, and the reciprocal below is exact while area < 2^24 (16.7 Mpixel).
  if (static_cast<uint64_t>(src_w) * src_h >= (uint64_t{1} << 24))
    throw std::invalid_argument("AreaResampler: source plane of " + std::to_string(src_w) + "x" +
                                std::to_string(src_h) + " is too large");
  x_ = make_axis(src_w, dst_w);
  y_ = make_axis(src_h, dst_h);
  area_ = static_cast<uint32_t>(src_w) * static_cast<uint32_t>(src_h);
  // With 2^shift >= 2^32 * area and recip = floor(2^shift / area) + 1, x * recip / 2^shift exceeds x / area by
  // less than x / 2^shift < 2^-24, less than the 1/area gap between x / area and the next integer: floors agree.
  int log2_area = 0;
  while ((uint64_t{1} << log2_area) < area_) ++log2_area;
  shift_ = 32 + log2_area;
  recip_ = (uint64_t{1} << shift_) / area_ + 1;
  if (static_cast<long>(src_h) * 255 <= 65535) {
    col16_.resize(static_cast<size_t>(kMaxPlanes) * src_w);
  } else {
    col32_.resize(static_cast<size_t>(kMaxPlanes) * src_w);
  }
  col_any_.resize(src_w);
  x_any_.resize(x_.weight.size());
  for (size_t i = 0; i < x_.weight.size(); ++i) x_any_[i] = x_.weight[i] != 0;
}

namespace {

// The horizontal pass of one output row of `planes` planes: out[p][ox] = round(sum_t wx[ox][t] *
// col[p][first[ox] + t] / area). One output's taps (first index, weights) serve every plane, and the tap count is a
// compile-time constant where it is a common one. Everything lives in locals: `out` is a uint8_t*, which may alias
// anything, so members would be reloaded after every store.
template <int kTaps, typename Acc>
void combine_columns(const Acc* const* col, int planes, const int* first, const uint16_t* wx, int taps, int dst_w,
                     uint32_t half, uint64_t recip, int shift, uint8_t* const* out) {
  const int n = kTaps > 0 ? kTaps : taps;
  for (int ox = 0; ox < dst_w; ++ox, wx += n) {
    const int f = first[ox];
    for (int p = 0; p < planes; ++p) {
      const Acc* c = col[p] + f;
      uint32_t sum = half;
      for (int t = 0; t < n; ++t) sum += static_cast<uint32_t>(wx[t]) * c[t];
      out[p][ox] = static_cast<uint8_t>((sum * recip) >> shift);
    }
  }
}

}  // namespace

template <typename Acc>
void AreaResampler::average_rows(const uint8_t* const* src, uint8_t* const* dst, int planes, Acc* col) {
  const int sw = src_w_, dw = dst_w_, ytaps = y_.width, xtaps = x_.width;
  const uint32_t half = area_ / 2;
  const uint64_t recip = recip_;
  const int shift = shift_;
  const int* first_x = x_.first.data();
  const uint16_t* wx = x_.weight.data();
  auto combine = xtaps == 2 ? &combine_columns<2, Acc>
                 : xtaps == 3 ? &combine_columns<3, Acc>
                 : xtaps == 4 ? &combine_columns<4, Acc>
                              : &combine_columns<0, Acc>;
  const Acc* cols[kMaxPlanes];
  uint8_t* outs[kMaxPlanes];
  for (int oy = 0; oy < dst_h_; ++oy) {
    const uint16_t* wy = y_.weight.data() + static_cast<size_t>(oy) * ytaps;
    const size_t first_row = static_cast<size_t>(y_.first[oy]) * sw;
    for (int p = 0; p < planes; ++p) {
      // Vertical: column sums of the source rows under this output row (a contiguous, widening multiply-add).
      Acc* c = col + static_cast<size_t>(p) * sw;
      const uint8_t* row = src[p] + first_row;
      {
        const Acc w = static_cast<Acc>(wy[0]);
        for (int x = 0; x < sw; ++x) c[x] = static_cast<Acc>(w * row[x]);
      }
      for (int t = 1; t < ytaps; ++t) {
        row += sw;
        const Acc w = static_cast<Acc>(wy[t]);
        if (w == 0) continue;  // padding
        for (int x = 0; x < sw; ++x) c[x] = static_cast<Acc>(c[x] + w * row[x]);
      }
      cols[p] = c;
      outs[p] = dst[p] + static_cast<size_t>(oy) * dw;
    }
    combine(cols, planes, first_x, wx, xtaps, dw, half, recip, shift, outs);
  }
}

void AreaResampler::average(const uint8_t* const* src, uint8_t* const* dst, int planes) {
  for (int done = 0; done < planes; done += kMaxPlanes) {
    const int n = std::min(kMaxPlanes, planes - done);
    if (!col16_.empty()) {
      average_rows(src + done, dst + done, n, col16_.data());
    } else {
      average_rows(src + done, dst + done, n, col32_.data());
    }
  }
}

void AreaResampler::any(const uint8_t* src, const uint8_t* is_set, uint8_t* dst) {
  // The label values that count; usually a handful (one per live enemy in view), often none.
  uint8_t values[256];
  int num_values = 0;
  for (int v = 0; v < 256; ++v)
    if (is_set[v] != 0) values[num_values++] = static_cast<uint8_t>(v);
  const int sw = src_w_, dw = dst_w_, xtaps = x_.width;
  if (num_values == 0) {
    std::memset(dst, 0, static_cast<size_t>(dw) * dst_h_);
    return;
  }
  uint8_t* acc = col_any_.data();
  const int* first_x = x_.first.data();
  for (int oy = 0; oy < dst_h_; ++oy) {
    std::fill(acc, acc + sw, uint8_t{0});
    for (int t = 0; t < y_.width; ++t) {
      if (y_.weight[static_cast<size_t>(oy) * y_.width + t] == 0) continue;  // padding, or no area in common
      const uint8_t* row = src + static_cast<size_t>(y_.first[oy] + t) * sw;
      if (num_values <= 16) {
        // Byte compares vectorise (16 pixels per instruction); a table lookup per pixel does not.
        for (int j = 0; j < num_values; ++j) {
          const uint8_t v = values[j];
          for (int x = 0; x < sw; ++x) acc[x] |= static_cast<uint8_t>(row[x] == v);
        }
      } else {
        for (int x = 0; x < sw; ++x) acc[x] |= static_cast<uint8_t>(is_set[row[x]] != 0);
      }
    }
    uint8_t* out = dst + static_cast<size_t>(oy) * dw;
    const uint8_t* tap = x_any_.data();
    for (int ox = 0; ox < dw; ++ox, tap += xtaps) {
      const uint8_t* a = acc + first_x[ox];
      uint8_t hit = 0;
      for (int t = 0; t < xtaps; ++t) hit |= tap[t] & a[t];
      out[ox] = hit;
    }
  }
}

}  // namespace beast
