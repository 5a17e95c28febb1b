// Teacher-forced logits from llama.cpp, the reference webr1's big-model check compares with (scripts/big-models.sh,
// tests/big_models.rs): the token ids of IDS_FILE (space-separated, as given: no BOS is added) go through the model in
// one batch, and for every position one JSON line gives its TOP_K highest logits (highest first) and the log-sum-exp
// over the vocabulary:
//
//   {"pos": 0, "top": [[id, logit], ...], "lse": float}
//
// Build against llama.cpp's library (scripts/big-models.sh does this):
//   cc -O2 -o llamacpp-logits scripts/llamacpp-logits.c -I LLAMA/include -I LLAMA/ggml/include \
//      -L BUILD/bin -lllama -lggml -lggml-base -lm -Wl,-rpath,BUILD/bin
// Run: llamacpp-logits MODEL.gguf IDS_FILE [TOP_K] [THREADS] > logits.jsonl

#include "llama.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int read_ids(const char *path, llama_token **ids) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, cap = 64;
    *ids = malloc(cap * sizeof(llama_token));
    long v;
    while (fscanf(f, "%ld", &v) == 1) {
        if (n == cap) *ids = realloc(*ids, (cap *= 2) * sizeof(llama_token));
        (*ids)[n++] = (llama_token) v;
    }
    fclose(f);
    return n;
}

static void quiet(enum ggml_log_level level, const char *text, void *data) {
    (void) data;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf IDS_FILE [TOP_K] [THREADS]\n", argv[0]);
        return 2;
    }
    int top_k = argc > 3 ? atoi(argv[3]) : 5;
    int threads = argc > 4 ? atoi(argv[4]) : 2;
    llama_token *ids = NULL;
    int n = read_ids(argv[2], &ids);
    if (n <= 0) {
        fprintf(stderr, "no token ids in %s\n", argv[2]);
        return 1;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n;
    cp.n_batch = n;
    cp.n_ubatch = n;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    struct llama_batch batch = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        batch.token[i] = ids[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n;
    if (llama_decode(ctx, batch) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        return 1;
    }
    int *best = malloc(top_k * sizeof(int));
    for (int i = 0; i < n; i++) {
        const float *logits = llama_get_logits_ith(ctx, i);
        double max = -INFINITY, sum = 0;
        for (int t = 0; t < n_vocab; t++) max = logits[t] > max ? logits[t] : max;
        for (int t = 0; t < n_vocab; t++) sum += exp(logits[t] - max);
        // The top_k highest, ties to the lower id.
        for (int k = 0; k < top_k; k++) {
            best[k] = -1;
            for (int t = 0; t < n_vocab; t++) {
                int taken = 0;
                for (int j = 0; j < k; j++) taken |= best[j] == t;
                if (!taken && (best[k] < 0 || logits[t] > logits[best[k]])) best[k] = t;
            }
        }
        printf("{\"pos\": %d, \"top\": [", i);
        for (int k = 0; k < top_k; k++) printf("%s[%d, %.5f]", k ? ", " : "", best[k], logits[best[k]]);
        printf("], \"lse\": %.5f}\n", max + log(sum));
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    free(best);
    free(ids);
    return 0;
}
