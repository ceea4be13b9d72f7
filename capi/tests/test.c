/* The C ABI exercised from C (built with AddressSanitizer and UBSan by scripts/test_c.sh):
 * every call, its success and each of its error paths.
 *
 *   test_c CLI_MODEL ROWS_CSV PRINTED
 *
 * CLI_MODEL was trained by `streamsgd train ROWS_CSV --missing mean --scale standard`, and
 * PRINTED holds what `streamsgd predict` printed for ROWS_CSV: the C predictions must be the
 * same numbers. */

#include "streamsgd.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__,    \
                    __LINE__, #cond, ssgd_last_error());                               \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* A call that must fail with `status` and a message containing `text`. */
#define FAILS(call, status, text)                                                      \
    do {                                                                               \
        ssgd_status s_ = (call);                                                       \
        if (s_ != (status) || strstr(ssgd_last_error(), (text)) == NULL) {             \
            fprintf(stderr, "%s:%d: %s gave %d \"%s\", expected %d with \"%s\"\n",     \
                    __FILE__, __LINE__, #call, (int)s_, ssgd_last_error(), (int)(status), \
                    text);                                                             \
            failures++;                                                                \
        }                                                                              \
    } while (0)

#define N 4000
#define D 4

/* Deterministic rows: y = 1 when x0 + 2·x1 − x2 > 0. */
static void make_rows(float *x, float *y, int n) {
    unsigned s = 12345;
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < D; j++) {
            s = s * 1103515245u + 12345u;
            x[r * D + j] = (float)((s >> 8) % 2000) / 1000.0f - 1.0f;
        }
        y[r] = (x[r * D] + 2 * x[r * D + 1] - x[r * D + 2] > 0) ? 1.0f : 0.0f;
    }
}

static void dense_model(const char *dir) {
    static float x[N * D], y[N], p[N];
    make_rows(x, y, N);
    ssgd_config cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, D);
    ssgd_model *m = NULL;
    CHECK(ssgd_model_new(&cfg, &m) == SSGD_OK && m != NULL);
    CHECK(strcmp(ssgd_last_error(), "") == 0);
    CHECK(ssgd_model_learn(m, x, N, y, NULL) == SSGD_OK);
    size_t d = 0;
    uint64_t learned = 0;
    CHECK(ssgd_model_features(m, &d) == SSGD_OK && d == D);
    CHECK(ssgd_model_rows_learned(m, &learned) == SSGD_OK && learned == N);
    CHECK(ssgd_model_predict(m, x, N, p) == SSGD_OK);
    int right = 0;
    for (int r = 0; r < N; r++) right += (p[r] > 0.5f) == (y[r] > 0.5f);
    CHECK(right > N * 9 / 10);

    /* Weights: learning with all weights 1 is learning without. */
    static float w[N];
    for (int r = 0; r < N; r++) w[r] = 1.0f;
    CHECK(ssgd_model_learn(m, x, 100, y, w) == SSGD_OK);

    /* Save, load, snapshot: the same predictions. */
    char path[4096];
    snprintf(path, sizeof path, "%s/c.model", dir);
    CHECK(ssgd_model_save(m, path) == SSGD_OK);
    ssgd_model *loaded = NULL;
    CHECK(ssgd_model_load(path, &loaded) == SSGD_OK);
    ssgd_predictor *snap = NULL, *from_file = NULL;
    CHECK(ssgd_model_snapshot(m, &snap) == SSGD_OK);
    CHECK(ssgd_predictor_load(path, &from_file) == SSGD_OK);
    static float a[N], b[N], c[N], e[N];
    CHECK(ssgd_model_predict(m, x, N, a) == SSGD_OK);
    CHECK(ssgd_model_predict(loaded, x, N, b) == SSGD_OK);
    CHECK(ssgd_predictor_predict(snap, x, N, c) == SSGD_OK);
    CHECK(ssgd_predictor_predict(from_file, x, N, e) == SSGD_OK);
    CHECK(memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) == 0 && memcmp(a, e, sizeof a) == 0);
    CHECK(ssgd_model_predict(m, x, 0, NULL) == SSGD_OK); /* no rows: nothing to write */

    /* Error paths. */
    float bad_x[D] = {1.0f, NAN, 0.0f, 0.0f}, one = 1.0f, half = 0.5f;
    FAILS(ssgd_model_learn(m, bad_x, 1, &one, NULL), SSGD_ERR_ROW, "NaN");
    FAILS(ssgd_model_learn(m, x, 1, &half, NULL), SSGD_ERR_ROW, "label");
    FAILS(ssgd_model_learn(NULL, x, 1, &one, NULL), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_learn(m, NULL, 1, &one, NULL), SSGD_ERR_ARGUMENT, "x is null");
    FAILS(ssgd_model_learn(m, x, 1, NULL, NULL), SSGD_ERR_ARGUMENT, "y is null");
    FAILS(ssgd_model_learn(m, x, SIZE_MAX / 2, y, NULL), SSGD_ERR_ARGUMENT, "overflows");
    FAILS(ssgd_model_predict(m, x, 1, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_model_features(m, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_model_features(NULL, &d), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_rows_learned(m, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_model_rows_learned(NULL, &learned), SSGD_ERR_ARGUMENT, "model is null");
    uint64_t indptr[2] = {0, 1};
    uint32_t idx[1] = {0};
    FAILS(ssgd_model_learn_csr(m, indptr, 1, idx, &one, &one, NULL), SSGD_ERR_KIND, "dense");
    FAILS(ssgd_model_predict_csr(m, indptr, 1, idx, &one, p), SSGD_ERR_KIND, "dense");
    FAILS(ssgd_model_save(m, "/nonexistent-dir/x.model"), SSGD_ERR_FILE, "nonexistent-dir");
    FAILS(ssgd_model_save(m, NULL), SSGD_ERR_ARGUMENT, "path");
    FAILS(ssgd_model_save(NULL, path), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_snapshot(NULL, &snap), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_snapshot(m, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_predictor_predict(NULL, x, 1, p), SSGD_ERR_ARGUMENT, "predictor is null");
    FAILS(ssgd_predictor_predict(snap, NULL, 1, p), SSGD_ERR_ARGUMENT, "x is null");
    FAILS(ssgd_predictor_predict(snap, x, 1, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_predictor_predict(snap, x, SIZE_MAX / 2, p), SSGD_ERR_ARGUMENT, "overflows");
    ssgd_predictor *none = NULL;
    FAILS(ssgd_predictor_load("/nonexistent.model", &none), SSGD_ERR_FILE, "nonexistent.model");
    FAILS(ssgd_predictor_load(NULL, &none), SSGD_ERR_ARGUMENT, "path");
    CHECK(none == NULL);
    ssgd_model *nm = NULL;
    FAILS(ssgd_model_load("/nonexistent.model", &nm), SSGD_ERR_FILE, "nonexistent.model");
    FAILS(ssgd_model_load(NULL, &nm), SSGD_ERR_ARGUMENT, "path");
    FAILS(ssgd_model_load(path, NULL), SSGD_ERR_ARGUMENT, "out is null");
    char junk[4096];
    snprintf(junk, sizeof junk, "%s/junk.model", dir);
    FILE *f = fopen(junk, "w");
    fputs("not a model", f);
    fclose(f);
    FAILS(ssgd_model_load(junk, &nm), SSGD_ERR_FILE, "not a valid streamsgd model");
    CHECK(nm == NULL);

    /* Still usable after every error. */
    CHECK(ssgd_model_learn(m, x, 10, y, NULL) == SSGD_OK);

    ssgd_predictor_free(snap);
    ssgd_predictor_free(from_file);
    ssgd_predictor_free(NULL);
    ssgd_model_free(loaded);
    ssgd_model_free(m);
    ssgd_model_free(NULL);
}

static void configs(void) {
    ssgd_model *m = NULL;
    FAILS(ssgd_model_new(NULL, &m), SSGD_ERR_ARGUMENT, "cfg is null");
    ssgd_config cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 3);
    FAILS(ssgd_model_new(&cfg, NULL), SSGD_ERR_ARGUMENT, "out is null");
    cfg.loss = 99;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "loss 99");
    cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 3);
    cfg.optimizer = 7;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "optimizer 7");
    cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 3);
    cfg.scale = 5;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "scale 5");
    cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 3);
    cfg.missing = 9;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "missing 9");
    cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 3);
    cfg.lr = -1.0f;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "learning rate");
    cfg = ssgd_config_dense(SSGD_LOSS_QUANTILE, 3);
    cfg.loss_param = 2.0f;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "quantile");
    cfg = ssgd_config_dense(SSGD_LOSS_SQUARED, 0);
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "features 0 and bits 0");
    cfg = ssgd_config_sparse(SSGD_LOSS_LOGISTIC, 40);
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "bits");
    cfg = ssgd_config_sparse(SSGD_LOSS_LOGISTIC, 10);
    cfg.scale = SSGD_SCALE_STANDARD;
    FAILS(ssgd_model_new(&cfg, &m), SSGD_ERR_ARGUMENT, "dense rows");
    CHECK(m == NULL);
    /* Every loss, optimizer, scaling and missing policy makes a model. */
    for (unsigned loss = SSGD_LOSS_LOGISTIC; loss <= SSGD_LOSS_PERCEPTRON; loss++)
        for (unsigned opt = SSGD_OPTIMIZER_DEFAULT; opt <= SSGD_OPTIMIZER_NORMALIZED; opt++)
            for (unsigned scale = SSGD_SCALE_STANDARD; scale <= SSGD_SCALE_MINMAX; scale++)
                for (unsigned missing = SSGD_MISSING_REJECT; missing <= SSGD_MISSING_MEAN; missing++) {
                    cfg = ssgd_config_dense(loss, 2);
                    cfg.optimizer = opt, cfg.scale = scale, cfg.missing = missing, cfg.batch = 1;
                    CHECK(ssgd_model_new(&cfg, &m) == SSGD_OK);
                    ssgd_model_free(m);
                    m = NULL;
                }
}

static void sparse_model(void) {
    ssgd_config cfg = ssgd_config_sparse(SSGD_LOSS_LOGISTIC, 12);
    cfg.missing = SSGD_MISSING_DROP;
    ssgd_model *m = NULL;
    CHECK(ssgd_model_new(&cfg, &m) == SSGD_OK);
    /* Row r has features r % 3 and 10 + r % 5; the label is feature 0's presence. */
    enum { R = 3000 };
    static uint64_t indptr[R + 1];
    static uint32_t idx[2 * R];
    static float val[2 * R], y[R], p[R];
    for (int r = 0; r < R; r++) {
        indptr[r] = 2 * r;
        idx[2 * r] = r % 3, idx[2 * r + 1] = 10 + r % 5;
        val[2 * r] = 1.0f, val[2 * r + 1] = 1.0f;
        y[r] = r % 3 == 0;
    }
    indptr[R] = 2 * R;
    CHECK(ssgd_model_learn_csr(m, indptr, R, idx, val, y, NULL) == SSGD_OK);
    CHECK(ssgd_model_predict_csr(m, indptr, 6, idx, val, p) == SSGD_OK);
    CHECK(p[0] > 0.8f && p[1] < 0.2f && p[3] > 0.8f);
    size_t d = 99;
    CHECK(ssgd_model_features(m, &d) == SSGD_OK && d == 0);
    /* A NaN value drops the row (its prediction is NaN). */
    float nan_val[2] = {NAN, 1.0f};
    CHECK(ssgd_model_predict_csr(m, indptr, 1, idx, nan_val, p) == SSGD_OK && isnan(p[0]));
    float x[2] = {1, 2};
    FAILS(ssgd_model_learn(m, x, 1, y, NULL), SSGD_ERR_KIND, "sparse");
    FAILS(ssgd_model_predict(m, x, 1, p), SSGD_ERR_KIND, "sparse");
    uint64_t bad[2] = {1, 2};
    FAILS(ssgd_model_learn_csr(m, bad, 1, idx, val, y, NULL), SSGD_ERR_ARGUMENT, "indptr");
    uint64_t down[3] = {0, 2, 1};
    FAILS(ssgd_model_learn_csr(m, down, 2, idx, val, y, NULL), SSGD_ERR_ARGUMENT, "indptr");
    FAILS(ssgd_model_learn_csr(m, NULL, 1, idx, val, y, NULL), SSGD_ERR_ARGUMENT, "indptr is null");
    FAILS(ssgd_model_learn_csr(m, indptr, 1, NULL, val, y, NULL), SSGD_ERR_ARGUMENT, "indices or values is null");
    FAILS(ssgd_model_learn_csr(m, indptr, 1, idx, val, NULL, NULL), SSGD_ERR_ARGUMENT, "y is null");
    FAILS(ssgd_model_learn_csr(NULL, indptr, 1, idx, val, y, NULL), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_predict_csr(m, indptr, 1, idx, val, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_model_predict_csr(NULL, indptr, 1, idx, val, p), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_predict_csr(m, NULL, 1, idx, val, p), SSGD_ERR_ARGUMENT, "indptr is null");
    float inf_val[2] = {INFINITY, 1.0f};
    FAILS(ssgd_model_learn_csr(m, indptr, 1, idx, inf_val, y, NULL), SSGD_ERR_ARGUMENT, "infinite");
    float label = 3.0f;
    FAILS(ssgd_model_learn_csr(m, indptr, 1, idx, val, &label, NULL), SSGD_ERR_ROW, "label");
    ssgd_predictor *snap = NULL;
    CHECK(ssgd_model_snapshot(m, &snap) == SSGD_OK);
    FAILS(ssgd_predictor_predict(snap, x, 1, p), SSGD_ERR_KIND, "sparse");
    ssgd_predictor_free(snap);
    ssgd_model_free(m);
}

/* Rows of named features: a category and a number, as a dict or a CSV row has them. */
static void named_features(void) {
    ssgd_config cfg = ssgd_config_sparse(SSGD_LOSS_LOGISTIC, 14);
    ssgd_model *m = NULL;
    CHECK(ssgd_model_new(&cfg, &m) == SSGD_OK);
    const char *names[2] = {"city", "hour"};
    const char *cities[3] = {"paris", "oslo", "rome"};
    for (int i = 0; i < 3000; i++) {
        const char *cats[2] = {cities[i % 3], NULL};
        float values[2] = {0.0f, (float)(i % 24)};
        CHECK(ssgd_model_learn_named(m, names, values, cats, 2, i % 3 == 1) == SSGD_OK);
    }
    const char *oslo[2] = {"oslo", NULL}, *rome[2] = {"rome", NULL};
    float values[2] = {0.0f, 3.0f}, a = 0, b = 0, c = 0;
    CHECK(ssgd_model_predict_named(m, names, values, oslo, 2, &a) == SSGD_OK && a > 0.8f);
    CHECK(ssgd_model_predict_named(m, names, values, rome, 2, &b) == SSGD_OK && b < 0.2f);
    ssgd_predictor *snap = NULL;
    CHECK(ssgd_model_snapshot(m, &snap) == SSGD_OK);
    CHECK(ssgd_predictor_predict_named(snap, names, values, oslo, 2, &c) == SSGD_OK && c == a);
    /* Numbers only: categories may be null. */
    CHECK(ssgd_model_learn_named(m, names + 1, values + 1, NULL, 1, 1.0f) == SSGD_OK);
    uint64_t learned = 0;
    CHECK(ssgd_model_rows_learned(m, &learned) == SSGD_OK && learned == 3001);
    /* Errors, each naming what is wrong; nothing is learned. */
    float nan_values[2] = {0.0f, NAN};
    FAILS(ssgd_model_learn_named(m, names, nan_values, oslo, 2, 1.0f), SSGD_ERR_ROW, "feature hour");
    FAILS(ssgd_model_learn_named(m, names, NULL, NULL, 2, 1.0f), SSGD_ERR_ARGUMENT, "values is null");
    FAILS(ssgd_model_learn_named(m, NULL, values, oslo, 2, 1.0f), SSGD_ERR_ARGUMENT, "names is null");
    const char *null_name[2] = {"city", NULL};
    FAILS(ssgd_model_learn_named(m, null_name, values, oslo, 2, 1.0f), SSGD_ERR_ARGUMENT, "feature 1: its name is null");
    const char *bad_utf8[2] = {"city", "\xff"};
    FAILS(ssgd_model_learn_named(m, bad_utf8, values, oslo, 2, 1.0f), SSGD_ERR_ARGUMENT, "not UTF-8");
    FAILS(ssgd_model_learn_named(m, names, values, oslo, 2, 2.0f), SSGD_ERR_ROW, "label");
    FAILS(ssgd_model_learn_named(NULL, names, values, oslo, 2, 1.0f), SSGD_ERR_ARGUMENT, "model is null");
    FAILS(ssgd_model_predict_named(m, names, values, oslo, 2, NULL), SSGD_ERR_ARGUMENT, "out is null");
    FAILS(ssgd_predictor_predict_named(NULL, names, values, oslo, 2, &c), SSGD_ERR_ARGUMENT, "predictor is null");
    CHECK(ssgd_model_rows_learned(m, &learned) == SSGD_OK && learned == 3001);
    /* A dense model takes no named rows. */
    ssgd_config dense = ssgd_config_dense(SSGD_LOSS_LOGISTIC, 2);
    ssgd_model *d = NULL;
    CHECK(ssgd_model_new(&dense, &d) == SSGD_OK);
    FAILS(ssgd_model_learn_named(d, names, values, oslo, 2, 1.0f), SSGD_ERR_KIND, "dense");
    ssgd_predictor *dp = NULL;
    CHECK(ssgd_model_snapshot(d, &dp) == SSGD_OK);
    FAILS(ssgd_predictor_predict_named(dp, names, values, oslo, 2, &c), SSGD_ERR_KIND, "dense");
    ssgd_predictor_free(dp);
    ssgd_model_free(d);
    ssgd_predictor_free(snap);
    ssgd_model_free(m);
}

/* A predictor shared by threads that predict at once while the model learns on. */
struct shared {
    ssgd_predictor *p;
    float *x;
    int ok;
};

static void *serve(void *arg) {
    struct shared *s = arg;
    static __thread float out[N];
    s->ok = ssgd_predictor_predict(s->p, s->x, N, out) == SSGD_OK;
    return NULL;
}

static void threads(void) {
    static float x[N * D], y[N];
    make_rows(x, y, N);
    ssgd_config cfg = ssgd_config_dense(SSGD_LOSS_LOGISTIC, D);
    ssgd_model *m = NULL;
    CHECK(ssgd_model_new(&cfg, &m) == SSGD_OK);
    CHECK(ssgd_model_learn(m, x, N, y, NULL) == SSGD_OK);
    ssgd_predictor *p = NULL;
    CHECK(ssgd_model_snapshot(m, &p) == SSGD_OK);
    pthread_t t[4];
    struct shared s[4];
    for (int i = 0; i < 4; i++) {
        s[i] = (struct shared){p, x, 0};
        pthread_create(&t[i], NULL, serve, &s[i]);
    }
    CHECK(ssgd_model_learn(m, x, N, y, NULL) == SSGD_OK);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK(s[i].ok);
    }
    ssgd_predictor_free(p);
    ssgd_model_free(m);
}

/* The CLI's model (mean imputation, standard scaling) predicts in C what `predict` printed. */
static void cli_model(const char *model, const char *csv, const char *printed) {
    FILE *rows = fopen(csv, "r"), *want = fopen(printed, "r");
    CHECK(rows != NULL && want != NULL);
    if (rows == NULL || want == NULL) return;
    ssgd_model *m = NULL;
    ssgd_predictor *p = NULL;
    CHECK(ssgd_model_load(model, &m) == SSGD_OK);
    CHECK(ssgd_predictor_load(model, &p) == SSGD_OK);
    size_t d = 0;
    CHECK(ssgd_model_features(m, &d) == SSGD_OK && d == 4);
    char line[1024];
    CHECK(fgets(line, sizeof line, rows) != NULL); /* the header */
    int n = 0, nan_cells = 0;
    while (fgets(line, sizeof line, rows)) {
        float x[4];
        char *cell = line;
        for (int j = 0; j < 4; j++) {
            char *end = strchr(cell, ',');
            if (end == cell) {
                x[j] = NAN;
                nan_cells++;
            } else {
                x[j] = strtof(cell, NULL);
            }
            cell = end + 1;
        }
        float expected, a, b;
        CHECK(fscanf(want, "%f", &expected) == 1);
        CHECK(ssgd_model_predict(m, x, 1, &a) == SSGD_OK);
        CHECK(ssgd_predictor_predict(p, x, 1, &b) == SSGD_OK);
        if (a != expected || b != expected) {
            fprintf(stderr, "row %d: C %.9g / %.9g, CLI %.9g\n", n + 1, a, b, expected);
            failures++;
        }
        n++;
    }
    CHECK(n == 3000 && nan_cells > 500);
    fclose(rows);
    fclose(want);
    ssgd_predictor_free(p);
    ssgd_model_free(m);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s DIR CLI_MODEL ROWS_CSV PRINTED\n", argv[0]);
        return 2;
    }
    dense_model(argv[1]);
    configs();
    sparse_model();
    named_features();
    threads();
    cli_model(argv[2], argv[3], argv[4]);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("C ABI: every call and error path passed\n");
    return 0;
}
