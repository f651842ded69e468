// The host-side entry points of the emulated kernels (kernels/emu.h), called by the unit tests in
// src/emu.rs: one per kernel, launched with the grid and block shapes src/gpu.rs uses on a GPU.
#define AHA_EMU 1
#include "emu.h"
#include "decode.cu"

static dim3 mv_grid(int rows) { return dim3((rows + MV_WARPS - 1) / MV_WARPS); }

extern "C" int aha_emu_matvec(int fmt, const void* w, const float* x, float* y, const float* bias, int rows, int cols,
                              int acc, int round) {
    const dim3 g = mv_grid(rows), b(MV_WARPS * WARP);
    switch (fmt) {
    case 0: emu_launch(g, b, [=] { matvec_f32(w, x, y, bias, rows, cols, acc, round); }); return 0;
    case 1: emu_launch(g, b, [=] { matvec_bf16(w, x, y, bias, rows, cols, acc, round); }); return 0;
    case 2: emu_launch(g, b, [=] { matvec_f16(w, x, y, bias, rows, cols, acc, round); }); return 0;
    case 3: emu_launch(g, b, [=] { matvec_q8_0(w, x, y, bias, rows, cols, acc, round); }); return 0;
    case 4: emu_launch(g, b, [=] { matvec_q4_k(w, x, y, bias, rows, cols, acc, round); }); return 0;
    case 5: emu_launch(g, b, [=] { matvec_q6_k(w, x, y, bias, rows, cols, acc, round); }); return 0;
    }
    return -1;
}

extern "C" int aha_emu_swiglu(int fmt, const void* wg, const void* wu, const float* x, float* h, int rows, int cols,
                              int round) {
    const dim3 g = mv_grid(rows), b(MV_WARPS * WARP);
    switch (fmt) {
    case 0: emu_launch(g, b, [=] { swiglu_f32(wg, wu, x, h, rows, cols, round); }); return 0;
    case 1: emu_launch(g, b, [=] { swiglu_bf16(wg, wu, x, h, rows, cols, round); }); return 0;
    case 2: emu_launch(g, b, [=] { swiglu_f16(wg, wu, x, h, rows, cols, round); }); return 0;
    case 3: emu_launch(g, b, [=] { swiglu_q8_0(wg, wu, x, h, rows, cols, round); }); return 0;
    case 4: emu_launch(g, b, [=] { swiglu_q4_k(wg, wu, x, h, rows, cols, round); }); return 0;
    case 5: emu_launch(g, b, [=] { swiglu_q6_k(wg, wu, x, h, rows, cols, round); }); return 0;
    }
    return -1;
}

extern "C" int aha_emu_embed(int fmt, const void* t, const int* tokpos, float* x, int cols, int round) {
    const dim3 g(1), b(256);
    switch (fmt) {
    case 0: emu_launch(g, b, [=] { embed_f32(t, tokpos, x, cols, round); }); return 0;
    case 1: emu_launch(g, b, [=] { embed_bf16(t, tokpos, x, cols, round); }); return 0;
    case 2: emu_launch(g, b, [=] { embed_f16(t, tokpos, x, cols, round); }); return 0;
    case 3: emu_launch(g, b, [=] { embed_q8_0(t, tokpos, x, cols, round); }); return 0;
    case 4: emu_launch(g, b, [=] { embed_q4_k(t, tokpos, x, cols, round); }); return 0;
    case 5: emu_launch(g, b, [=] { embed_q6_k(t, tokpos, x, cols, round); }); return 0;
    }
    return -1;
}

extern "C" int aha_emu_rmsnorm(const float* x, const float* w, float* y, int n, float eps, int round) {
    emu_launch(dim3(1), dim3(256), [=] { rmsnorm_f32(x, w, y, n, eps, round); });
    return 0;
}

static dim3 rope_block(int d) { return dim3(((d / 2 + 31) / 32) * 32); }

extern "C" int aha_emu_rope_kv(int cache, float* qkv, const int* tokpos, const float* cos_t, const float* sin_t,
                               void* kc, void* vc, int cap, int h, int kvh, int d, int interleaved, int round) {
    const dim3 g(h + 2 * kvh), b = rope_block(d);
    switch (cache) {
    case 0:
        emu_launch(g, b, [=] { rope_kv_f32(qkv, tokpos, cos_t, sin_t, (float*)kc, (float*)vc, cap, h, kvh, d, interleaved, round); });
        return 0;
    case 1:
        emu_launch(g, b, [=] { rope_kv_bf16(qkv, tokpos, cos_t, sin_t, (uint16_t*)kc, (uint16_t*)vc, cap, h, kvh, d, interleaved, round); });
        return 0;
    case 2:
        emu_launch(g, b, [=] { rope_kv_f16(qkv, tokpos, cos_t, sin_t, (uint16_t*)kc, (uint16_t*)vc, cap, h, kvh, d, interleaved, round); });
        return 0;
    }
    return -1;
}

extern "C" int aha_emu_attend(int cache, const float* q, const void* kc, const void* vc, const int* tokpos, float* y,
                              float* part_o, float* part_ml, int* done, int cap, int h, int kvh, int d, float scale,
                              int round, int splits) {
    const dim3 g(h * splits), b(ATT_WARPS * WARP);
    switch (cache) {
    case 0:
        emu_launch(g, b, [=] { attend_f32(q, (const float*)kc, (const float*)vc, tokpos, y, part_o, part_ml, done, cap, h, kvh, d, scale, round, splits); });
        return 0;
    case 1:
        emu_launch(g, b, [=] { attend_bf16(q, (const uint16_t*)kc, (const uint16_t*)vc, tokpos, y, part_o, part_ml, done, cap, h, kvh, d, scale, round, splits); });
        return 0;
    case 2:
        emu_launch(g, b, [=] { attend_f16(q, (const uint16_t*)kc, (const uint16_t*)vc, tokpos, y, part_o, part_ml, done, cap, h, kvh, d, scale, round, splits); });
        return 0;
    }
    return -1;
}

// The emulation's half-precision conversions, for their own test.
extern "C" float aha_emu_h2f(uint16_t h) { return emu_f16_to_f32(h); }
extern "C" uint16_t aha_emu_f2h(float f) { return emu_f32_to_f16(f); }
