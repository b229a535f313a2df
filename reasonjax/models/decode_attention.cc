// One decode step's attention on the CPU, as an XLA FFI handler: a single query token per
// row over the filled slots of one layer's KV cache, grouped-query (G query heads share a
// KV head). Built and loaded by reasonjax/models/cpu_kernels.py; the reference is
// transformer.grouped_attention, which this matches to float rounding.
//
// Shapes: q [B, K, G, D]; keys [B, K, D, S] (slot-minor); values [B, K, S, D]; valid [B, S]
// (the slots a row's query may read); out [B, K, G, D]. scale = 1 / sqrt(D).
//
// Per (row, KV head) it reads keys and values once, in memory order, up to the row's last
// valid slot; the (row, KV head) pairs are shared between the caller and XLA's intra-op
// thread pool.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// sc[g * end + s] = scale * q[g] . keys[:, s] for s < end: key row d (contiguous over
// slots) adds q[g, d] * keys[d, :end] to every query's scores.
template <int G>
void Scores(const float* q, const float* k, int64_t D, int64_t S, int64_t end, float scale,
            float* sc) {
  std::fill(sc, sc + G * end, 0.0f);
  for (int64_t d = 0; d < D; ++d) {
    const float* kd = k + d * S;
    for (int g = 0; g < G; ++g) {
      const float qd = q[g * D + d] * scale;
      float* sg = sc + g * end;
      for (int64_t s = 0; s < end; ++s) sg[s] += qd * kd[s];
    }
  }
}

void ScoresAnyG(const float* q, const float* k, int64_t G, int64_t D, int64_t S, int64_t end,
                float scale, float* sc) {
  switch (G) {
    case 1: return Scores<1>(q, k, D, S, end, scale, sc);
    case 2: return Scores<2>(q, k, D, S, end, scale, sc);
    case 4: return Scores<4>(q, k, D, S, end, scale, sc);
    default:
      for (int64_t g = 0; g < G; ++g) Scores<1>(q + g * D, k, D, S, end, scale, sc + g * end);
  }
}

// out[g] = sum_{s < end} p[g, s] * values[s] with the G x D sums held in registers.
template <int G, int D>
void Mix(const float* p, const float* v, int64_t end, float* out) {
  float acc[G][D] = {};
  for (int64_t s = 0; s < end; ++s) {
    const float* vs = v + s * D;
    for (int g = 0; g < G; ++g) {
      const float ps = p[g * end + s];
      for (int d = 0; d < D; ++d) acc[g][d] += ps * vs[d];
    }
  }
  for (int g = 0; g < G; ++g) std::copy(acc[g], acc[g] + D, out + g * D);
}

void MixAnyShape(const float* p, const float* v, int64_t G, int64_t D, int64_t end,
                 float* out) {
  if (D == 64 && G == 1) return Mix<1, 64>(p, v, end, out);
  if (D == 64 && G == 2) return Mix<2, 64>(p, v, end, out);
  if (D == 64 && G == 4) return Mix<4, 64>(p, v, end, out);
  if (D == 128 && G == 1) return Mix<1, 128>(p, v, end, out);
  if (D == 128 && G == 2) return Mix<2, 128>(p, v, end, out);
  std::fill(out, out + G * D, 0.0f);
  for (int64_t s = 0; s < end; ++s)
    for (int64_t g = 0; g < G; ++g) {
      const float ps = p[g * end + s];
      for (int64_t d = 0; d < D; ++d) out[g * D + d] += ps * v[s * D + d];
    }
}

// One (row, KV head): q [G, D], keys [D, S], values [S, D], valid [S] -> out [G, D];
// scores is scratch of G * S floats.
void AttendOne(const float* q, const float* k, const float* v, const bool* valid, int64_t G,
               int64_t D, int64_t S, float scale, float* scores, float* out) {
  int64_t end = S;
  while (end > 0 && !valid[end - 1]) --end;
  if (end == 0) {  // no valid slot: the reference's softmax of equal scores is uniform
    std::fill(scores, scores + G * S, 1.0f / static_cast<float>(S));
    MixAnyShape(scores, v, G, D, S, out);
    return;
  }
  ScoresAnyG(q, k, G, D, S, end, scale, scores);
  // The lowest float, as the reference masks scores.
  constexpr float kMasked = std::numeric_limits<float>::lowest();
  for (int64_t g = 0; g < G; ++g) {
    float* sc = scores + g * end;
    float mx = kMasked;
    for (int64_t s = 0; s < end; ++s) {
      if (!valid[s]) sc[s] = kMasked;
      mx = std::max(mx, sc[s]);
    }
    float sum = 0.0f;
    for (int64_t s = 0; s < end; ++s) {
      sc[s] = std::exp(sc[s] - mx);
      sum += sc[s];
    }
    const float inv = 1.0f / sum;
    for (int64_t s = 0; s < end; ++s) sc[s] *= inv;
  }
  MixAnyShape(scores, v, G, D, end, out);
}

// The (row, KV head) pairs of one call, taken one at a time by whichever thread is free.
// Shared-owned, so a pool task that starts after the caller has finished finds no work.
struct Work {
  const float *q, *k, *v;
  const bool* valid;
  float* out;
  int64_t B, K, G, D, S;
  float scale;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};

  void Run() {
    std::vector<float> scores(G * S);
    const int64_t n = B * K;
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) {
      AttendOne(q + i * G * D, k + i * D * S, v + i * S * D, valid + (i / K) * S, G, D, S,
                scale, scores.data(), out + i * G * D);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error DecodeAttentionImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                               ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                               ffi::Buffer<ffi::PRED> valid, float scale,
                               ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  auto md = valid.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || vd.size() != 4 || md.size() != 2)
    return ffi::Error::InvalidArgument(
        "decode_attention: expected q [B,K,G,D], k [B,K,D,S], v [B,K,S,D], valid [B,S]");
  auto work = std::make_shared<Work>();
  work->B = qd[0];
  work->K = qd[1];
  work->G = qd[2];
  work->D = qd[3];
  work->S = kd[3];
  if (kd[0] != work->B || kd[1] != work->K || kd[2] != work->D || vd[0] != work->B ||
      vd[1] != work->K || vd[2] != work->S || vd[3] != work->D || md[0] != work->B ||
      md[1] != work->S)
    return ffi::Error::InvalidArgument(
        "decode_attention: shapes disagree (q [B,K,G,D], k [B,K,D,S], v [B,K,S,D], "
        "valid [B,S])");
  work->q = q.typed_data();
  work->k = k.typed_data();
  work->v = v.typed_data();
  work->valid = valid.typed_data();
  work->out = out->typed_data();
  work->scale = scale;
  const int64_t n = work->B * work->K;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(DecodeAttention, DecodeAttentionImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // keys
                                  .Arg<ffi::Buffer<ffi::F32>>()   // values
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                  .Attr<float>("scale")
                                  .Ret<ffi::Buffer<ffi::F32>>());
