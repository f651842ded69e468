// aha's decode-step kernels for CUDA: one token through a qwen2/llama block in ~8 launches, every
// buffer at a fixed address so that the whole step can be captured once as a CUDA graph and
// replayed. The token and its position are read from device memory, not passed as launch
// arguments, for the same reason.
//
// The same source compiles two ways:
//   - by nvcc to PTX (build.rs, feature `cuda`), loaded at run time by crates/aha-cuda/src/gpu.rs;
//   - by the host C++ compiler against kernels/emu.h (AHA_EMU), which runs every CUDA thread of a
//     block as an OS thread, so the unit tests check these kernels against the Rust references in
//     src/reference.rs on machines without a GPU.
//
// Conventions. Activations are f32. Weights are f32, bf16 or f16 (read as raw 16-bit words) or
// GGUF blocks (Q8_0, Q4_K, Q6_K). `round` != 0 rounds each stored activation to bf16, at the
// points where candle's bf16 forward pass stores a bf16 tensor, so the fused path can be compared
// with the unfused one to within bf16's precision.

#ifdef AHA_EMU
#include "emu.h"
#else
#include <cuda_fp16.h>
#include <stdint.h>
#endif

#define WARP 32

// ---------------------------------------------------------------------------------------------
// Scalars

__device__ __forceinline__ float bits_f32(uint32_t u) {
#ifdef AHA_EMU
    float f;
    memcpy(&f, &u, 4);
    return f;
#else
    return __uint_as_float(u);
#endif
}

__device__ __forceinline__ uint32_t f32_bits(float f) {
#ifdef AHA_EMU
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#else
    return __float_as_uint(f);
#endif
}

__device__ __forceinline__ float bf16_f32(uint16_t h) { return bits_f32(((uint32_t)h) << 16); }

// Round to nearest even, NaN kept a NaN.
__device__ __forceinline__ uint16_t f32_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float round_bf16(float f) { return bf16_f32(f32_bf16(f)); }

__device__ __forceinline__ float maybe_round(float f, int round) { return round ? round_bf16(f) : f; }

__device__ __forceinline__ float f16_f32(uint16_t h) {
#ifdef AHA_EMU
    return emu_f16_to_f32(h);
#else
    return __half2float(__ushort_as_half(h));
#endif
}

__device__ __forceinline__ uint16_t f32_f16(float f) {
#ifdef AHA_EMU
    return emu_f32_to_f16(f);
#else
    return __half_as_ushort(__float2half_rn(f));
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The KV cache's element types.
struct CacheF32 {
    typedef float T;
    static __device__ __forceinline__ float load(const T* p, int i) { return p[i]; }
    static __device__ __forceinline__ void store(T* p, int i, float v) { p[i] = v; }
};
struct CacheBF16 {
    typedef uint16_t T;
    static __device__ __forceinline__ float load(const T* p, int i) { return bf16_f32(p[i]); }
    static __device__ __forceinline__ void store(T* p, int i, float v) { p[i] = f32_bf16(v); }
};
struct CacheF16 {
    typedef uint16_t T;
    static __device__ __forceinline__ float load(const T* p, int i) { return f16_f32(p[i]); }
    static __device__ __forceinline__ void store(T* p, int i, float v) { p[i] = f32_f16(v); }
};

// ---------------------------------------------------------------------------------------------
// Weight formats: each gives one lane's part of a row's dot product with x (the warp sums the
// parts), and one element of a row (the embedding lookup).

// Dense f32: each lane takes 8 consecutive columns per step. cols % 8 == 0.
struct WF32 {
    static __device__ __forceinline__ float dot(const void* w, long row, int cols, const float* __restrict__ x, int lane) {
        const float* r = (const float*)w + row * (long)cols;
        float acc = 0.f;
#pragma unroll 4
        for (int c = lane * 8; c < cols; c += WARP * 8) {
            float4 a = *(const float4*)(r + c), b = *(const float4*)(r + c + 4);
            float4 xa = *(const float4*)(x + c), xb = *(const float4*)(x + c + 4);
            acc += a.x * xa.x + a.y * xa.y + a.z * xa.z + a.w * xa.w;
            acc += b.x * xb.x + b.y * xb.y + b.z * xb.z + b.w * xb.w;
        }
        return acc;
    }
    static __device__ __forceinline__ float at(const void* w, long row, int cols, int i) {
        return ((const float*)w)[row * (long)cols + i];
    }
};

// Dense 16-bit (bf16 or f16): one 16-byte load of 8 values per lane per step. cols % 8 == 0.
template <bool BF>
struct W16 {
    static __device__ __forceinline__ float cvt(uint32_t word, int hi) {
        uint16_t h = hi ? (uint16_t)(word >> 16) : (uint16_t)(word & 0xffffu);
        return BF ? bf16_f32(h) : f16_f32(h);
    }
    static __device__ __forceinline__ float dot(const void* w, long row, int cols, const float* __restrict__ x, int lane) {
        const uint16_t* r = (const uint16_t*)w + row * (long)cols;
        float acc = 0.f;
#pragma unroll 4
        for (int c = lane * 8; c < cols; c += WARP * 8) {
            uint4 q = *(const uint4*)(r + c);
            float4 xa = *(const float4*)(x + c), xb = *(const float4*)(x + c + 4);
            acc += cvt(q.x, 0) * xa.x + cvt(q.x, 1) * xa.y + cvt(q.y, 0) * xa.z + cvt(q.y, 1) * xa.w;
            acc += cvt(q.z, 0) * xb.x + cvt(q.z, 1) * xb.y + cvt(q.w, 0) * xb.z + cvt(q.w, 1) * xb.w;
        }
        return acc;
    }
    static __device__ __forceinline__ float at(const void* w, long row, int cols, int i) {
        uint16_t h = ((const uint16_t*)w)[row * (long)cols + i];
        return BF ? bf16_f32(h) : f16_f32(h);
    }
};

__device__ __forceinline__ uint16_t ld_u16(const uint8_t* p) { return (uint16_t)p[0] | ((uint16_t)p[1] << 8); }

// Q8_0: blocks of 32 values, 34 bytes (f16 scale, 32 int8). Four lanes per block, 8 values each.
struct WQ8_0 {
    static __device__ __forceinline__ float dot(const void* w, long row, int cols, const float* __restrict__ x, int lane) {
        const int nb = cols / 32;
        const uint8_t* r = (const uint8_t*)w + row * (long)nb * 34;
        const int part = lane & 3;
        float acc = 0.f;
        for (int b = lane >> 2; b < nb; b += WARP / 4) {
            const uint8_t* blk = r + (long)b * 34;
            const float d = f16_f32(*(const uint16_t*)blk);
            const uint16_t* qs = (const uint16_t*)(blk + 2 + part * 8);
            const float* xs = x + b * 32 + part * 8;
            float s = 0.f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                uint16_t two = qs[i];
                s += (float)(int8_t)(two & 0xff) * xs[2 * i] + (float)(int8_t)(two >> 8) * xs[2 * i + 1];
            }
            acc += d * s;
        }
        return acc;
    }
    static __device__ __forceinline__ float at(const void* w, long row, int cols, int i) {
        const uint8_t* blk = (const uint8_t*)w + (row * (long)(cols / 32) + i / 32) * 34;
        return f16_f32(ld_u16(blk)) * (float)(int8_t)blk[2 + (i % 32)];
    }
};

// Q4_K: super-blocks of 256 values, 144 bytes: f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins for 8 sub-blocks of 32, 128 bytes of 4-bit values. Byte k of the 32-byte group j holds
// value 64j + k (low nibble, sub-block 2j) and 64j + 32 + k (high nibble, sub-block 2j + 1).
__device__ __forceinline__ void q4k_scale_min(int j, const uint8_t* q, float* sc, float* m) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *m = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

struct WQ4_K {
    // Eight lanes per super-block; lane part c reads 16 bytes: group c/2, bytes 16(c%2)..+16.
    static __device__ __forceinline__ float dot(const void* w, long row, int cols, const float* __restrict__ x, int lane) {
        const int nb = cols / 256;
        const uint8_t* r = (const uint8_t*)w + row * (long)nb * 144;
        const int c = lane & 7, j = c >> 1, h = c & 1;
        float acc = 0.f;
        for (int b = lane >> 3; b < nb; b += WARP / 8) {
            const uint8_t* blk = r + (long)b * 144;
            const float d = f16_f32(*(const uint16_t*)blk);
            const float dmin = f16_f32(*(const uint16_t*)(blk + 2));
            float sc_lo, m_lo, sc_hi, m_hi;
            q4k_scale_min(2 * j, blk + 4, &sc_lo, &m_lo);
            q4k_scale_min(2 * j + 1, blk + 4, &sc_hi, &m_hi);
            uint4 q4 = *(const uint4*)(blk + 16 + 32 * j + 16 * h);
            uint32_t words[4] = {q4.x, q4.y, q4.z, q4.w};
            const float* xl = x + b * 256 + 64 * j + 16 * h;
            const float* xh = xl + 32;
            float ql = 0.f, qh = 0.f, sl = 0.f, sh = 0.f;
#pragma unroll
            for (int k = 0; k < 16; k++) {
                uint32_t byte = (words[k >> 2] >> (8 * (k & 3))) & 0xff;
                ql += (float)(byte & 0xF) * xl[k];
                qh += (float)(byte >> 4) * xh[k];
                sl += xl[k];
                sh += xh[k];
            }
            acc += d * (sc_lo * ql + sc_hi * qh) - dmin * (m_lo * sl + m_hi * sh);
        }
        return acc;
    }
    static __device__ __forceinline__ float at(const void* w, long row, int cols, int i) {
        const uint8_t* blk = (const uint8_t*)w + (row * (long)(cols / 256) + i / 256) * 144;
        const int k = i % 256, j = k / 64, hi = (k % 64) >= 32, l = k % 32;
        float sc, m;
        q4k_scale_min(2 * j + hi, blk + 4, &sc, &m);
        const uint8_t byte = blk[16 + 32 * j + l];
        const float q = (float)(hi ? (byte >> 4) : (byte & 0xF));
        return f16_f32(ld_u16(blk)) * sc * q - f16_f32(ld_u16(blk + 2)) * m;
    }
};

// Q6_K: super-blocks of 256 values, 210 bytes: ql[128] (low 4 bits), qh[64] (high 2 bits),
// int8 scales[16], f16 d. In half n (128 values), l in 0..32 makes values l, l+32, l+64, l+96
// from ql[64n+l], ql[64n+l+32] and qh[32n+l].
struct WQ6_K {
    // Eight lanes per super-block; lane part c takes half c/4 and l = 8(c%4)..+8.
    static __device__ __forceinline__ float dot(const void* w, long row, int cols, const float* __restrict__ x, int lane) {
        const int nb = cols / 256;
        const uint8_t* r = (const uint8_t*)w + row * (long)nb * 210;
        const int c = lane & 7, n = c >> 2, l0 = (c & 3) * 8;
        float acc = 0.f;
        for (int b = lane >> 3; b < nb; b += WARP / 8) {
            const uint8_t* blk = r + (long)b * 210;
            const uint8_t* ql = blk + 64 * n;
            const uint8_t* qh = blk + 128 + 32 * n;
            const int8_t* sc = (const int8_t*)(blk + 192) + 8 * n + l0 / 16;
            const float d = f16_f32(ld_u16(blk + 208));
            const float* xs = x + b * 256 + 128 * n + l0;
            float s1 = 0.f, s2 = 0.f, s3 = 0.f, s4 = 0.f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int l = l0 + i;
                const uint8_t a = ql[l], bb = ql[l + 32], hh = qh[l];
                s1 += (float)((int)((a & 0xF) | ((hh & 3) << 4)) - 32) * xs[i];
                s2 += (float)((int)((bb & 0xF) | (((hh >> 2) & 3) << 4)) - 32) * xs[i + 32];
                s3 += (float)((int)((a >> 4) | (((hh >> 4) & 3) << 4)) - 32) * xs[i + 64];
                s4 += (float)((int)((bb >> 4) | (((hh >> 6) & 3) << 4)) - 32) * xs[i + 96];
            }
            acc += d * ((float)sc[0] * s1 + (float)sc[2] * s2 + (float)sc[4] * s3 + (float)sc[6] * s4);
        }
        return acc;
    }
    static __device__ __forceinline__ float at(const void* w, long row, int cols, int i) {
        const uint8_t* blk = (const uint8_t*)w + (row * (long)(cols / 256) + i / 256) * 210;
        const int k = i % 256, n = k / 128, rest = k % 128, quarter = rest / 32, l = rest % 32;
        const uint8_t* ql = blk + 64 * n;
        const uint8_t hh = blk[128 + 32 * n + l];
        const int8_t* sc = (const int8_t*)(blk + 192) + 8 * n + l / 16;
        int q;
        switch (quarter) {
        case 0: q = (ql[l] & 0xF) | ((hh & 3) << 4); break;
        case 1: q = (ql[l + 32] & 0xF) | (((hh >> 2) & 3) << 4); break;
        case 2: q = (ql[l] >> 4) | (((hh >> 4) & 3) << 4); break;
        default: q = (ql[l + 32] >> 4) | (((hh >> 6) & 3) << 4); break;
        }
        return f16_f32(ld_u16(blk + 208)) * (float)sc[2 * quarter] * (float)(q - 32);
    }
};

// ---------------------------------------------------------------------------------------------
// Kernels

#define MV_WARPS 8

// y[r] = W[r]·x (+ bias[r]) for r < rows, one warp per row, MV_WARPS rows per block. With
// `accumulate`, y[r] += that instead (the residual add after the attention output and the
// feed-forward's down projection). Rounded as candle rounds a bf16 matmul, bias add and residual
// add, each result stored.
template <class F>
__device__ void matvec(const void* __restrict__ w, const float* __restrict__ x, float* __restrict__ y,
                       const float* __restrict__ bias, int rows, int cols, int accumulate, int round) {
    const int lane = threadIdx.x % WARP;
    const long row = (long)blockIdx.x * MV_WARPS + threadIdx.x / WARP;
    if (row >= rows) return;
    float v = warp_sum(F::dot(w, row, cols, x, lane));
    if (lane == 0) {
        v = maybe_round(v, round);
        if (bias) v = maybe_round(v + bias[row], round);
        if (accumulate) v = maybe_round(y[row] + v, round);
        y[row] = v;
    }
}

// h[r] = silu(Wg[r]·x) · (Wu[r]·x): the feed-forward's gate and up projections and SwiGLU in one
// pass over x.
template <class F>
__device__ void matvec_swiglu(const void* __restrict__ wg, const void* __restrict__ wu, const float* __restrict__ x,
                              float* __restrict__ h, int rows, int cols, int round) {
    const int lane = threadIdx.x % WARP;
    const long row = (long)blockIdx.x * MV_WARPS + threadIdx.x / WARP;
    if (row >= rows) return;
    float g = warp_sum(F::dot(wg, row, cols, x, lane));
    float u = warp_sum(F::dot(wu, row, cols, x, lane));
    if (lane == 0) {
        g = maybe_round(g, round);
        u = maybe_round(u, round);
        float s = maybe_round(g / (1.f + expf(-g)), round);
        h[row] = maybe_round(s * u, round);
    }
}

// x = row `tokpos[0]` of the embedding table. One block.
template <class F>
__device__ void embed(const void* __restrict__ table, const int* __restrict__ tokpos, float* __restrict__ x, int cols, int round) {
    const long tok = tokpos[0];
    for (int i = threadIdx.x; i < cols; i += blockDim.x) x[i] = maybe_round(F::at(table, tok, cols, i), round);
}

// y = x / sqrt(mean(x²) + eps) · w over one row of n, one block (blockDim a multiple of 32,
// at most 1024).
__device__ void rmsnorm(const float* __restrict__ x, const float* __restrict__ w, float* __restrict__ y, int n, float eps, int round) {
    __shared__ float part[32];
    float s = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i] * x[i];
    s = warp_sum(s);
    const int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP, nw = blockDim.x / WARP;
    if (lane == 0) part[wid] = s;
    __syncthreads();
    if (wid == 0) {
        s = lane < nw ? part[lane] : 0.f;
        s = warp_sum(s);
        if (lane == 0) part[0] = s;
    }
    __syncthreads();
    const float scale = rsqrtf(part[0] / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) y[i] = maybe_round(x[i] * scale * w[i], round);
}

// Rotary embedding of the new token's queries (in place) and keys, and the write of its keys and
// values into the cache at position tokpos[1]. `qkv` holds q (h·d), k (kvh·d), v (kvh·d);
// cos/sin: (positions, d/2) tables. Caches: (kvh, cap, d). Grid: h + 2·kvh blocks (query heads,
// key heads, value heads), blockDim ≥ d/2 rounded up to a warp.
template <class C>
__device__ void rope_kv(float* __restrict__ qkv, const int* __restrict__ tokpos, const float* __restrict__ cos_t,
                        const float* __restrict__ sin_t, typename C::T* __restrict__ kc, typename C::T* __restrict__ vc,
                        int cap, int h, int kvh, int d, int interleaved, int round) {
    const int pos = tokpos[1];
    const int head = blockIdx.x, half = d / 2, t = threadIdx.x;
    if (head >= h + kvh) {
        // A value head: copied into the cache as it is.
        const int vh = head - h - kvh;
        const float* v = qkv + (long)(h + kvh) * d + (long)vh * d;
        typename C::T* dst = vc + ((long)vh * cap + pos) * d;
        for (int i = t; i < d; i += blockDim.x) C::store(dst, i, v[i]);
        return;
    }
    float* x = qkv + (long)head * d;
    if (t < half) {
        const float c = cos_t[(long)pos * half + t], s = sin_t[(long)pos * half + t];
        const int a = interleaved ? 2 * t : t, b = interleaved ? 2 * t + 1 : t + half;
        const float x0 = x[a], x1 = x[b];
        const float r0 = maybe_round(x0 * c - x1 * s, round), r1 = maybe_round(x0 * s + x1 * c, round);
        if (head < h) {
            x[a] = r0;
            x[b] = r1;
        } else {
            typename C::T* dst = kc + ((long)(head - h) * cap + pos) * d;
            C::store(dst, a, r0);
            C::store(dst, b, r1);
        }
    }
}

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_MAX_SPLITS 32

// Decode attention of one query head over the keys and values of positions 0..=tokpos[1] in the
// cache of its group's key head, split across `splits` blocks per head (flash-decoding): block
// (head, split) takes a contiguous share of the positions, each lane one position at a time (its
// score is a whole dot product, no shuffles), with an online softmax per warp; the block writes
// its share's max, sum and weighted values to `part_*`, and the last block of a head to finish
// (a counter in `done`, reset by that block for the next step) combines the shares into y. One
// kernel either way. `scale` multiplies the scores (1 when the query weights carry it). d ≤ 256.
// With `round`, scores and the output are rounded to bf16 as candle's bf16 pass stores them (the
// probabilities are not: candle rounds them after a global softmax that a split has no view of).
template <class C>
__device__ void attend(const float* __restrict__ q, const typename C::T* __restrict__ kc, const typename C::T* __restrict__ vc,
                       const int* __restrict__ tokpos, float* __restrict__ y, float* part_o, float* part_ml, int* done,
                       int cap, int h, int kvh, int d, float scale, int round, int splits) {
    __shared__ float qs[ATT_MAX_D];
    __shared__ float red_m[ATT_WARPS], red_l[ATT_WARPS];
    __shared__ float red_o[ATT_WARPS][ATT_MAX_D];
    __shared__ int last;
    const int len = tokpos[1] + 1;
    const int head = blockIdx.x / splits, split = blockIdx.x % splits;
    const int chunk = (len + splits - 1) / splits;
    const int start = split * chunk;
    const int end = min(len, start + chunk);
    const int kh = head / (h / kvh);
    const int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP;
    const typename C::T* ks = kc + (long)kh * cap * d;
    const typename C::T* vs = vc + (long)kh * cap * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) qs[e] = q[(long)head * d + e];
    __syncthreads();
    float m = -INFINITY, l = 0.f;
    float o[ATT_MAX_D / WARP];
#pragma unroll
    for (int t = 0; t < ATT_MAX_D / WARP; t++) o[t] = 0.f;
    for (int base = start + wid * WARP; base < end; base += ATT_WARPS * WARP) {
        const int j = base + lane;
        float s = -INFINITY;
        if (j < end) {
            const typename C::T* kr = ks + (long)j * d;
            float dot = 0.f;
            for (int e = 0; e < d; e++) dot += qs[e] * C::load(kr, e);
            s = maybe_round(dot, round);
            if (scale != 1.f) s = maybe_round(s * scale, round);
        }
        const float nm = fmaxf(m, warp_max(s));
        const float corr = expf(m - nm);
        const float p = j < end ? expf(s - nm) : 0.f;
        l = l * corr + warp_sum(p);
#pragma unroll
        for (int t = 0; t < ATT_MAX_D / WARP; t++) o[t] *= corr;
        const int n = min(WARP, end - base);
        for (int i = 0; i < n; i++) {
            const float pi = __shfl_sync(0xffffffffu, p, i);
            const typename C::T* vr = vs + (long)(base + i) * d;
#pragma unroll
            for (int t = 0; t < ATT_MAX_D / WARP; t++) {
                const int e = lane + WARP * t;
                if (e < d) o[t] += pi * C::load(vr, e);
            }
        }
        m = nm;
    }
    // The block's share: its warps combined.
    if (lane == 0) {
        red_m[wid] = m;
        red_l[wid] = l;
    }
#pragma unroll
    for (int t = 0; t < ATT_MAX_D / WARP; t++) {
        const int e = lane + WARP * t;
        if (e < d) red_o[wid][e] = o[t];
    }
    __syncthreads();
    float bm = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) bm = fmaxf(bm, red_m[w]);
    float bl = 0.f;
    for (int w = 0; w < ATT_WARPS; w++)
        if (red_l[w] > 0.f) bl += red_l[w] * expf(red_m[w] - bm);
    float* po = part_o + ((long)head * splits + split) * d;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float acc = 0.f;
        for (int w = 0; w < ATT_WARPS; w++)
            if (red_l[w] > 0.f) acc += red_o[w][e] * expf(red_m[w] - bm);
        po[e] = acc;
    }
    if (threadIdx.x == 0) {
        part_ml[((long)head * splits + split) * 2] = bm;
        part_ml[((long)head * splits + split) * 2 + 1] = bl;
    }
    // The last block of this head to get here combines the shares.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const int prev = atomicAdd(&done[head], 1);
        last = prev == splits - 1;
        if (last) done[head] = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    const float* hm = part_ml + (long)head * splits * 2;
    float gm = -INFINITY;
    for (int sp = 0; sp < splits; sp++)
        if (__ldcg(hm + 2 * sp + 1) > 0.f) gm = fmaxf(gm, __ldcg(hm + 2 * sp));
    float gl = 0.f;
    for (int sp = 0; sp < splits; sp++) {
        const float sl = __ldcg(hm + 2 * sp + 1);
        if (sl > 0.f) gl += sl * expf(__ldcg(hm + 2 * sp) - gm);
    }
    const float inv = 1.f / gl;
    for (int e = threadIdx.x; e < d; e += blockDim.x) {
        float acc = 0.f;
        for (int sp = 0; sp < splits; sp++) {
            const float sl = __ldcg(hm + 2 * sp + 1);
            if (sl > 0.f) acc += __ldcg(part_o + ((long)head * splits + sp) * d + e) * expf(__ldcg(hm + 2 * sp) - gm);
        }
        y[(long)head * d + e] = maybe_round(acc * inv, round);
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: one per kernel and format, with C names for the loader.

#define MATVEC_ENTRY(name, F)                                                                                   \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)                                               \
        matvec_##name(const void* w, const float* x, float* y, const float* bias, int rows, int cols, int acc, \
                      int round) {                                                                              \
        matvec<F>(w, x, y, bias, rows, cols, acc, round);                                                      \
    }                                                                                                           \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * WARP)                                               \
        swiglu_##name(const void* wg, const void* wu, const float* x, float* h, int rows, int cols, int round) { \
        matvec_swiglu<F>(wg, wu, x, h, rows, cols, round);                                                     \
    }                                                                                                           \
    extern "C" __global__ void embed_##name(const void* t, const int* tokpos, float* x, int cols, int round) {  \
        embed<F>(t, tokpos, x, cols, round);                                                                    \
    }

MATVEC_ENTRY(f32, WF32)
MATVEC_ENTRY(bf16, W16<true>)
MATVEC_ENTRY(f16, W16<false>)
MATVEC_ENTRY(q8_0, WQ8_0)
MATVEC_ENTRY(q4_k, WQ4_K)
MATVEC_ENTRY(q6_k, WQ6_K)

extern "C" __global__ void rmsnorm_f32(const float* x, const float* w, float* y, int n, float eps, int round) {
    rmsnorm(x, w, y, n, eps, round);
}

#define CACHE_ENTRY(name, C)                                                                                        \
    extern "C" __global__ void rope_kv_##name(float* qkv, const int* tokpos, const float* cos_t, const float* sin_t, \
                                              C::T* kc, C::T* vc, int cap, int h, int kvh, int d, int interleaved,    \
                                              int round) {                                                          \
        rope_kv<C>(qkv, tokpos, cos_t, sin_t, kc, vc, cap, h, kvh, d, interleaved, round);                          \
    }                                                                                                               \
    extern "C" __global__ void __launch_bounds__(ATT_WARPS * WARP)                                                  \
        attend_##name(const float* q, const C::T* kc, const C::T* vc, const int* tokpos, float* y, float* part_o,   \
                      float* part_ml, int* done, int cap, int h, int kvh, int d, float scale, int round,            \
                      int splits) {                                                                                 \
        attend<C>(q, kc, vc, tokpos, y, part_o, part_ml, done, cap, h, kvh, d, scale, round, splits);               \
    }

CACHE_ENTRY(f32, CacheF32)
CACHE_ENTRY(bf16, CacheBF16)
CACHE_ENTRY(f16, CacheF16)
