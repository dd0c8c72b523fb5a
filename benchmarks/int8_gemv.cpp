// Hand-written int8 weight-only products for benchmarks/linear_kernels.py (not shipped in af2):
// y (M, N) = x (M, K) @ (codes (N, K) int8 * scale (N,)).T, x and y bf16 or fp32.
// int8_linear: the numerics (sums in fp32). Each weight row is read once, 64 codes at a time,
// widened to four fp32 vectors, and multiplied into every row of x while it is in registers; rows of
// the weight are split across threads. int8_linear_a16: W8A16 integer arithmetic, for comparison.
// Built with g++ by linear_kernels.py (AVX-512F/BW/VNNI CPUs only); they ask whether a kernel written
// for this CPU streams int8 weights faster than torch._weight_int8pack_mm.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>

namespace {

constexpr int64_t kMaxRows = 8;

// What both products check and prepare: codes (N, K) int8 with K a multiple of 64, x as 1 to kMaxRows fp32 rows
// of K, the scales in fp32, and the fp32 output they fill; finish() gives it x's dtype and leading shape.
struct Operands {
  int64_t M, N, K;
  at::Tensor xf, sf, y;

  Operands(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
    TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar && codes.is_contiguous(), "codes: (N, K) int8");
    N = codes.size(0);
    K = codes.size(1);
    TORCH_CHECK(K % 64 == 0, "K must be a multiple of 64, got ", K);
    xf = x.reshape({-1, K}).to(at::kFloat).contiguous();
    M = xf.size(0);
    TORCH_CHECK(M >= 1 && M <= kMaxRows, "1 to ", kMaxRows, " rows, got ", M);
    sf = scale.to(at::kFloat).contiguous();
    y = at::empty({M, N}, at::kFloat);
  }

  at::Tensor finish(const at::Tensor& x) const {
    auto sizes = x.sizes().vec();
    sizes.back() = N;
    return y.to(x.scalar_type()).reshape(sizes);
  }
};

// R weight rows at a time, each x row's sum split into S accumulators (the four 16-code quarters of a
// 64-code step summed separately when S = 4): R * M * S independent FMA chains, enough to cover the FMA
// latency. One accumulator per row was latency-bound (four dependent FMAs per 64 codes).
template <int R, int S>
void rows_kernel(const float* xp, const int8_t* wp, const float* sp, float* yp, int64_t M, int64_t N, int64_t K,
                 int64_t begin, int64_t end) {
  for (int64_t n0 = begin; n0 < end; n0 += R) {
    const int64_t rows = std::min<int64_t>(R, end - n0);
    __m512 acc[R][kMaxRows][S];
    for (int r = 0; r < R; ++r)
      for (int64_t m = 0; m < M; ++m)
        for (int s = 0; s < S; ++s) acc[r][m][s] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 64) {
      for (int r = 0; r < R; ++r) {
        if (r >= rows) break;
        const int8_t* w = wp + (n0 + r) * K + k;
        __m512 wq[4];
        for (int j = 0; j < 4; ++j)
          wq[j] = _mm512_cvtepi32_ps(
              _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16 * j))));
        for (int64_t m = 0; m < M; ++m) {
          const float* xr = xp + m * K + k;
          for (int j = 0; j < 4; ++j)
            acc[r][m][j % S] = _mm512_fmadd_ps(wq[j], _mm512_loadu_ps(xr + 16 * j), acc[r][m][j % S]);
        }
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t m = 0; m < M; ++m) {
        __m512 a = acc[r][m][0];
        for (int s = 1; s < S; ++s) a = _mm512_add_ps(a, acc[r][m][s]);
        yp[m * N + n0 + r] = _mm512_reduce_add_ps(a) * sp[n0 + r];
      }
  }
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  Operands o(x, codes, scale);
  const int64_t M = o.M, N = o.N, K = o.K;
  const float* xp = o.xf.data_ptr<float>();
  const int8_t* wp = codes.data_ptr<int8_t>();
  const float* sp = o.sf.data_ptr<float>();
  float* yp = o.y.data_ptr<float>();
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    if (M == 1) rows_kernel<2, 4>(xp, wp, sp, yp, M, N, K, begin, end);
    else if (M == 2) rows_kernel<2, 2>(xp, wp, sp, yp, M, N, K, begin, end);
    else if (M <= 4) rows_kernel<2, 1>(xp, wp, sp, yp, M, N, K, begin, end);
    else rows_kernel<1, 1>(xp, wp, sp, yp, M, N, K, begin, end);
  });
  return o.finish(x);
}

// For comparison only (not the numerics): activations quantized per row to int16, the codes
// widened to int16, and VNNI's vpdpwssd (32 int16 products a step into int32); W8A16 arithmetic. Built for
// AVX512-BW/VNNI by attribute only, so the rest of the library still loads on AVX-512F CPUs without them.
__attribute__((target("avx512bw,avx512vnni")))
void a16_rows(const int16_t* xp, const float* xsp, const int8_t* wp, const float* sp, float* yp, int64_t M,
              int64_t N, int64_t K, int64_t begin, int64_t end) {
  for (int64_t n0 = begin; n0 < end; n0 += 2) {
    const int rows = (int)std::min<int64_t>(2, end - n0);
    __m512i acc[2][kMaxRows][2];
    for (int r = 0; r < 2; ++r)
      for (int64_t m = 0; m < M; ++m) acc[r][m][0] = acc[r][m][1] = _mm512_setzero_si512();
    for (int64_t k = 0; k < K; k += 64) {
      for (int r = 0; r < rows; ++r) {
        const int8_t* w = wp + (n0 + r) * K + k;
        const __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w)));
        const __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32)));
        for (int64_t m = 0; m < M; ++m) {
          const int16_t* xr = xp + m * K + k;
          acc[r][m][0] = _mm512_dpwssd_epi32(acc[r][m][0], w0, _mm512_loadu_si512(xr));
          acc[r][m][1] = _mm512_dpwssd_epi32(acc[r][m][1], w1, _mm512_loadu_si512(xr + 32));
        }
      }
    }
    for (int r = 0; r < rows; ++r)
      for (int64_t m = 0; m < M; ++m)
        yp[m * N + n0 + r] = (float)_mm512_reduce_add_epi32(_mm512_add_epi32(acc[r][m][0], acc[r][m][1])) *
                             xsp[m] * sp[n0 + r];
  }
}

at::Tensor int8_linear_a16(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  Operands o(x, codes, scale);
  const int64_t M = o.M, N = o.N, K = o.K;
  at::Tensor xs = o.xf.abs().amax(1).clamp_min(1e-30) / 32767.0;  // (M,) per-row scale
  at::Tensor xq = at::round(o.xf / xs.unsqueeze(1)).to(at::kShort).contiguous();
  const int16_t* xp = xq.data_ptr<int16_t>();
  const float* xsp = xs.data_ptr<float>();
  const int8_t* wp = codes.data_ptr<int8_t>();
  const float* sp = o.sf.data_ptr<float>();
  float* yp = o.y.data_ptr<float>();
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) { a16_rows(xp, xsp, wp, sp, yp, M, N, K, begin, end); });
  return o.finish(x);
}

}  // namespace

TORCH_LIBRARY(af2_bench, m) { m.def("int8_linear(Tensor x, Tensor codes, Tensor scale) -> Tensor", &int8_linear);
  m.def("int8_linear_a16(Tensor x, Tensor codes, Tensor scale) -> Tensor", &int8_linear_a16);
}
