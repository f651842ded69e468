// Runs CUDA C++ kernels on the host, for tests on machines without a GPU: every thread of a block
// is a fiber (ucontext) on the calling OS thread, scheduled round-robin; blocks run one after
// another; `__shared__` variables are function statics (shared by the block's threads, as blocks
// never overlap); `__syncthreads` is a barrier of the block and warp shuffles exchange through a
// per-warp slot array between two barriers of the warp. Deterministic, and fast enough for small
// shapes. Enough of CUDA for kernels/decode.cu: 1-D blocks whose size is a multiple of 32, no
// atomics, no dynamic shared memory, no divergent __syncthreads.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <ucontext.h>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};

inline dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct EmuFiber {
    ucontext_t ctx;
    std::unique_ptr<char[]> stack;
    unsigned tid = 0, bid = 0;
    bool done = false;
};

struct EmuSched {
    std::vector<EmuFiber> fibers;
    ucontext_t main;
    int cur = -1;
    std::function<void()> body;
};

inline EmuSched emu_s;

// Back to the scheduler; it resumes this fiber (with its threadIdx and blockIdx) on its next round.
inline void emu_yield() {
    EmuFiber& f = emu_s.fibers[emu_s.cur];
    f.bid = blockIdx.x;
    swapcontext(&f.ctx, &emu_s.main);
}

// A reusable barrier for `n` fibers.
struct EmuBarrier {
    int n = 0, count = 0;
    unsigned gen = 0;
    void wait() {
        const unsigned g = gen;
        if (++count == n) {
            count = 0;
            gen++;
        } else {
            while (gen == g) emu_yield();
        }
    }
};

struct EmuWarp {
    EmuBarrier bar;
    uint64_t slot[32];
};

inline EmuBarrier emu_block_barrier;
inline std::vector<std::unique_ptr<EmuWarp>> emu_warps;

inline void __syncthreads() { emu_block_barrier.wait(); }

// Every lane of the warp puts `v` in its slot and reads the slot of lane `src(lane)`.
template <class T, class F>
inline T emu_exchange(T v, F src) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    EmuWarp& w = *emu_warps[threadIdx.x / 32];
    const int lane = threadIdx.x % 32;
    memcpy(&w.slot[lane], &v, sizeof(T));
    w.bar.wait();
    T r;
    memcpy(&r, &w.slot[src(lane) % 32], sizeof(T));
    w.bar.wait();
    return r;
}

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu_exchange(v, [=](int lane) { return lane ^ mask; });
}

template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return emu_exchange(v, [=](int) { return src; });
}

// Fibers never run at the same time: atomics are plain, fences and cache hints nothing.
inline int atomicAdd(int* p, int v) {
    const int old = *p;
    *p = old + v;
    return old;
}
inline void __threadfence() {}
template <class T>
inline T __ldcg(const T* p) {
    return *p;
}

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int min(int a, int b) { return a < b ? a : b; }

// IEEE half precision by hand (GCC 12 has no C++ _Float16 on every target): exact widening, and
// narrowing rounded to nearest even, with subnormals, infinities and NaN.
inline float emu_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0) {
        if (m == 0) {
            u = sign;
        } else {
            e = 113;
            while (!(m & 0x400)) {
                m <<= 1;
                e--;
            }
            u = sign | (e << 23) | ((m & 0x3ff) << 13);
        }
    } else if (e == 31) {
        u = sign | 0x7f800000 | (m << 13);
    } else {
        u = sign | ((e + 112) << 23) | (m << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline uint16_t emu_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    const uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    if (a >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0));
    const int e = (int)(a >> 23) - 127 + 15;
    uint32_t m = a & 0x7fffff;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        m |= 0x800000;
        const int shift = 14 - e;
        uint32_t hm = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (hm & 1))) hm++;
        return (uint16_t)(sign | hm);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (m >> 13);
    const uint32_t rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

inline void emu_fiber_main(int i) {
    for (unsigned b = 0; b < gridDim.x; b++) {
        blockIdx = dim3(b);
        emu_s.body();
        // No thread starts the next block (and reuses its statics) before all are done.
        emu_block_barrier.wait();
    }
    emu_s.fibers[i].done = true;
}

// Runs `kernel()` for every thread of every block of `grid` x `block` (1-D).
template <class K>
void emu_launch(dim3 grid, dim3 block, K kernel) {
    const unsigned n = block.x;
    const size_t stack = 128 * 1024;
    blockDim = block;
    gridDim = grid;
    emu_s.body = kernel;
    emu_block_barrier = EmuBarrier();
    emu_block_barrier.n = (int)n;
    emu_warps.clear();
    for (unsigned w = 0; w < (n + 31) / 32; w++) {
        emu_warps.emplace_back(new EmuWarp());
        emu_warps.back()->bar.n = 32;
    }
    emu_s.fibers.clear();
    emu_s.fibers.resize(n);
    for (unsigned i = 0; i < n; i++) {
        EmuFiber& f = emu_s.fibers[i];
        f.stack.reset(new char[stack]);
        f.tid = i;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.get();
        f.ctx.uc_stack.ss_size = stack;
        f.ctx.uc_link = &emu_s.main;
        makecontext(&f.ctx, (void (*)())emu_fiber_main, 1, (int)i);
    }
    unsigned live = n;
    while (live > 0) {
        for (unsigned i = 0; i < n; i++) {
            EmuFiber& f = emu_s.fibers[i];
            if (f.done) continue;
            threadIdx = dim3(f.tid);
            blockIdx = dim3(f.bid);
            emu_s.cur = (int)i;
            swapcontext(&emu_s.main, &f.ctx);
            if (f.done) live--;
        }
    }
    emu_s.fibers.clear();
}
