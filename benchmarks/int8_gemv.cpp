// A hand-written int8 weight-only product for benchmarks/linear_kernels.py (not shipped in af2):
// y (M, N) = x (M, K) @ (codes (N, K) int8 * scale (N,)).T, x and y bf16 or fp32, sums in fp32.
// Each weight row is read once, 64 codes at a time, widened to four fp32 vectors, and multiplied
// into every row of x while it is in registers; rows of the weight are split across threads.
// Built with g++ by linear_kernels.py (AVX-512F CPUs only); it asks whether a kernel written for this
// CPU streams int8 weights faster than torch._weight_int8pack_mm.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <immintrin.h>

namespace {

constexpr int64_t kMaxRows = 8;

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == at::kChar && codes.is_contiguous(), "codes: (N, K) int8");
  const int64_t N = codes.size(0), K = codes.size(1);
  TORCH_CHECK(K % 64 == 0, "K must be a multiple of 64, got ", K);
  at::Tensor xf = x.reshape({-1, K}).to(at::kFloat).contiguous();
  const int64_t M = xf.size(0);
  TORCH_CHECK(M >= 1 && M <= kMaxRows, "1 to ", kMaxRows, " rows, got ", M);
  at::Tensor sf = scale.to(at::kFloat).contiguous();
  at::Tensor y = at::empty({M, N}, at::kFloat);
  const float* xp = xf.data_ptr<float>();
  const int8_t* wp = codes.data_ptr<int8_t>();
  const float* sp = sf.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int8_t* w = wp + n * K;
      __m512 acc[kMaxRows];
      for (int64_t m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
      for (int64_t k = 0; k < K; k += 64) {
        const __m512i v = _mm512_loadu_si512(static_cast<const void*>(w + k));
        const __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(v)));
        const __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 1)));
        const __m512 w2 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 2)));
        const __m512 w3 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(v, 3)));
        for (int64_t m = 0; m < M; ++m) {
          const float* xr = xp + m * K + k;
          __m512 a = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xr), acc[m]);
          a = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + 16), a);
          a = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xr + 32), a);
          acc[m] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xr + 48), a);
        }
      }
      for (int64_t m = 0; m < M; ++m) yp[m * N + n] = _mm512_reduce_add_ps(acc[m]) * sp[n];
    }
  });
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  return y.to(x.scalar_type()).reshape(sizes);
}

}  // namespace

TORCH_LIBRARY(af2_bench, m) { m.def("int8_linear(Tensor x, Tensor codes, Tensor scale) -> Tensor", &int8_linear); }
