// Runs CUDA C++ kernels on the host, for tests on machines without a GPU: every thread of a block
// is an OS thread, blocks run one after another, `__shared__` variables are function statics
// (shared by the block's threads; blocks never overlap), `__syncthreads` is a barrier of the
// block and warp shuffles exchange through a per-warp slot array between two barriers of the warp.
// Slow (thousands of context switches per launch) and meant for small shapes only. Enough of CUDA
// for kernels/decode.cu: 1-D blocks whose size is a multiple of 32, no atomics, no dynamic shared
// memory, no divergent __syncthreads.
#pragma once
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
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

inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

// A reusable barrier for `n` threads.
struct EmuBarrier {
    std::mutex m;
    std::condition_variable cv;
    int n = 0, count = 0;
    unsigned gen = 0;
    void wait() {
        std::unique_lock<std::mutex> lk(m);
        const unsigned g = gen;
        if (++count == n) {
            count = 0;
            gen++;
            cv.notify_all();
        } else {
            cv.wait(lk, [&] { return gen != g; });
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

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    EmuWarp& w = *emu_warps[threadIdx.x / 32];
    const int lane = threadIdx.x % 32;
    memcpy(&w.slot[lane], &v, sizeof(T));
    w.bar.wait();
    T r;
    memcpy(&r, &w.slot[lane ^ mask], sizeof(T));
    w.bar.wait();
    return r;
}

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }

inline float emu_f16_to_f32(uint16_t h) {
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
}

inline uint16_t emu_f32_to_f16(float x) {
    _Float16 f = (_Float16)x;
    uint16_t h;
    memcpy(&h, &f, 2);
    return h;
}

// Runs `kernel()` for every thread of every block of `grid` × `block` (1-D).
template <class K>
void emu_launch(dim3 grid, dim3 block, K kernel) {
    const unsigned n = block.x;
    blockDim = block;
    gridDim = grid;
    emu_block_barrier.n = (int)n;
    emu_block_barrier.count = 0;
    emu_warps.clear();
    for (unsigned w = 0; w < (n + 31) / 32; w++) {
        emu_warps.emplace_back(new EmuWarp());
        emu_warps.back()->bar.n = 32;
    }
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < n; t++) {
        threads.emplace_back([=] {
            threadIdx = dim3(t);
            for (unsigned b = 0; b < grid.x; b++) {
                blockIdx = dim3(b);
                kernel();
                // No thread starts the next block (and reuses its statics) before all are done.
                emu_block_barrier.wait();
            }
        });
    }
    for (auto& th : threads) th.join();
}
