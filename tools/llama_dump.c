// llama.cpp's side of tools/dump_vs_llamacpp.sh: evaluates token ids with llama.cpp (the
// prebuilt libraries of node-llama-cpp) and writes every contiguous f32 tensor of the last
// batch's graph, through llama.cpp's eval callback, to DIR/NNN_NAME_OP.bin (raw f32), listed
// in DIR/index.txt ("NNN NAME NE0 NE1 NE2 NE3 OP"). Prints the argmax of the last logits.
//
//   llama_dump MODEL THREADS DIR FLASH_ATTN(-1 auto, 0, 1) PROMPT_IDS [DECODE_IDS]
//
// PROMPT_IDS go in one batch; DECODE_IDS (optional) one by one after it, and then only the last
// of them is dumped. Ids are comma-separated. LLBINS names the folder of the backend libraries.
#include "ggml-backend.h"
#include "ggml.h"
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *out_dir;
static FILE *index_file;
static int dumping = 0;
static int seq = 0;

static bool on_tensor(struct ggml_tensor *t, bool ask, void *user) {
    (void)user;
    if (ask) return dumping;
    if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t)) return true;
    size_t n = ggml_nbytes(t);
    void *buf = malloc(n);
    ggml_backend_tensor_get(t, buf, 0, n);
    char path[1024];
    snprintf(path, sizeof path, "%s/%03d_%s_%s.bin", out_dir, seq, t->name, ggml_op_desc(t));
    for (char *p = path + strlen(out_dir) + 1; *p; p++)
        if (*p == ' ' || *p == '(' || *p == ')') *p = '_';
    FILE *f = fopen(path, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    free(buf);
    fprintf(index_file, "%03d %s %lld %lld %lld %lld %s\n", seq, t->name, (long long)t->ne[0],
            (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], ggml_op_desc(t));
    seq++;
    return true;
}

static int parse_ids(const char *s, llama_token *out, int cap) {
    int n = 0;
    char *copy = strdup(s);
    for (char *tok = strtok(copy, ","); tok && n < cap; tok = strtok(NULL, ",")) out[n++] = atoi(tok);
    free(copy);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL THREADS DIR FLASH_ATTN PROMPT_IDS [DECODE_IDS]\n", argv[0]);
        return 2;
    }
    out_dir = argv[3];
    char path[1024];
    snprintf(path, sizeof path, "%s/index.txt", out_dir);
    index_file = fopen(path, "w");
    if (!index_file) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    llama_backend_init();
    ggml_backend_load_all_from_path(getenv("LLBINS"));
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = cp.n_ubatch = 512;
    cp.n_threads = cp.n_threads_batch = atoi(argv[2]);
    cp.flash_attn_type = atoi(argv[4]);
    cp.cb_eval = on_tensor;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    static llama_token prompt[512], decode[512];
    int np = parse_ids(argv[5], prompt, 512);
    int nd = argc > 6 ? parse_ids(argv[6], decode, 512) : 0;
    dumping = nd == 0;
    if (llama_decode(ctx, llama_batch_get_one(prompt, np))) return 1;
    for (int i = 0; i < nd; i++) {
        dumping = i == nd - 1;
        if (llama_decode(ctx, llama_batch_get_one(&decode[i], 1))) return 1;
    }
    const float *logits = llama_get_logits_ith(ctx, -1);
    int nv = llama_vocab_n_tokens(llama_model_get_vocab(model));
    int best = 0;
    for (int i = 1; i < nv; i++)
        if (logits[i] > logits[best]) best = i;
    printf("argmax %d\n", best);
    fclose(index_file);
    return 0;
}
