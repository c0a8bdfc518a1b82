/* test_runtime.c - the runtime's guards: bad launches are errors naming
 * what is wrong, broken kernels are caught by tq_verify, the JIT disk cache
 * rebuilds corrupt files, a missing compiler is a clear error. */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "core.h"
#include "internal.h"
#include "ref/ref.h"
#include "tq.h"

static tq_variant variant(void) {
  tq_variant v;
  tqg_variant_default(&v);
  v.head_dim = 64;
  v.group = 2;
  v.key_bits = 3;
  v.value_bits = 2;
  return v;
}

/* ---- broken kernels: the reference with one defect each ---------------- */
static tq_ref broken_ref;

static int good(tq_op op, const tq_kargs *a) {
  return tq_ref_run(&broken_ref, op, a) != TQ_OK;
}
static int enc_ok(const tq_kargs *a) { return good(TQ_OP_ENCODE, a); }
static int dec_ok(const tq_kargs *a) { return good(TQ_OP_DECODE, a); }
static int pre_ok(const tq_kargs *a) { return good(TQ_OP_PREFILL, a); }
static int deq_ok(const tq_kargs *a) { return good(TQ_OP_DEQUANT, a); }
/* Encode that moves one index two cells. */
static int enc_flip(const tq_kargs *a) {
  good(TQ_OP_ENCODE, a);
  uint8_t *slot = tq_ref_slot(&broken_ref, a, 0, 0, 0, a->seq_lens[0] - 1);
  slot[0] ^= 0x2; /* 3-bit index 0: +-2 */
  return 0;
}
/* Encode that also scribbles past the new tokens. */
static int enc_stray(const tq_kargs *a) {
  good(TQ_OP_ENCODE, a);
  ((uint8_t *)a->k_cache)[0] ^= 0xFF;
  return 0;
}
/* Decode that forgets the last query head. */
static int dec_skip(const tq_kargs *a) {
  uint8_t keep[4 * 64];
  size_t n = (size_t)tqg_dtype_size(broken_ref.v.dtype) * 64;
  size_t last = ((size_t)a->batch * a->n_tokens * a->kv_heads * broken_ref.v.group - 1) * n;
  memcpy(keep, (uint8_t *)a->out + last, n);
  good(TQ_OP_DECODE, a);
  memcpy((uint8_t *)a->out + last, keep, n);
  return 0;
}
/* Dequant 1% off in scale. */
static int deq_scaled(const tq_kargs *a) {
  good(TQ_OP_DEQUANT, a);
  size_t n = (size_t)a->batch * a->n_tokens * a->kv_heads * 64;
  for (size_t i = 0; i < n; i++)
    tqg_store(a->v, broken_ref.v.dtype, i, 1.01 * tqg_load(a->v, broken_ref.v.dtype, i));
  return 0;
}

static void broken_kernels(void) {
  tq_variant v = variant();
  CHECK(tq_ref_init(&broken_ref, &v) == TQ_OK);
  tq_c_kernel_fn sets[3][TQ_OP_COUNT] = {
      {enc_ok, dec_ok, pre_ok, deq_ok},
      {enc_flip, dec_skip, pre_ok, deq_scaled},
      {enc_stray, dec_ok, pre_ok, deq_ok}};
  for (int s = 0; s < 3; s++) {
    char name[160], err[256];
    tqg_variant_name(&v, name, sizeof name);
    tq_dispatch_entry e = {name, tqg_variant_hash(&v), "c", v, {0}, NULL, NULL, 0, {0}, NULL, 0};
    memcpy(e.c_fn, sets[s], sizeof e.c_fn);
    tq_dispatch_table t = {"broken", TQ_GENERATOR_VERSION, 1, &e};
    tq_backend *be;
    CHECK(tq_open("c", &be, err, sizeof err) == TQ_OK);
    CHECK(tq_register(be, &t) == TQ_OK);
    for (int op = 0; op < TQ_OP_COUNT; op++) {
      tq_verify_result r;
      CHECK(tq_verify(be, &v, (tq_op)op, NULL, &r) == TQ_OK);
      CHECK(!strcmp(r.origin, "aot"));
      int defect = (s == 1 && op != TQ_OP_PREFILL) || (s == 2 && op == TQ_OP_ENCODE);
      CHECK(r.passed == !defect);
      if (r.passed != !defect)
        fprintf(stderr, "set %d op %s: passed=%d (%s)\n", s, tqg_op_name((tq_op)op),
                r.passed, r.detail);
    }
    tq_close(be);
  }
  tq_ref_free(&broken_ref);
}

/* ---- launch checks ---------------------------------------------------- */
static void bad_launches(void) {
  tq_backend *be;
  char err[256];
  CHECK(tq_open("vulkan-nope", &be, err, sizeof err) == TQ_ERR_UNAVAILABLE);
  CHECK_CONTAINS(err, "not built");
  CHECK(tq_open("c", &be, err, sizeof err) == TQ_OK);
  tq_variant v = variant();
  tq_kernel *k;
  CHECK(tq_get_kernel(be, &v, TQ_OP_DECODE, &k) == TQ_OK);
  v.head_dim = 70;
  CHECK(tq_get_kernel(be, &v, TQ_OP_DECODE, &k) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "head_dim = 70");
  v = variant();
  CHECK(tq_get_kernel(be, &v, TQ_OP_DECODE, &k) == TQ_OK);
  int B = 1, H = 2, cap = 16;
  tq_buffer *kc, *vc, *lens, *q, *out, *perm, *small;
  tq_alloc(be, tq_key_slot_bytes(&v) * B * H * cap, &kc);
  tq_alloc(be, tq_value_slot_bytes(&v) * B * H * cap, &vc);
  tq_alloc(be, 4 * B, &lens);
  tq_alloc(be, 2 * 64 * 2 * H * 8, &q);
  tq_alloc(be, 2 * 64 * 2 * H * 8, &out);
  tq_alloc(be, 2 * 64 * H, &perm);
  tq_alloc(be, 8, &small);
  int32_t len = 10;
  tq_write(be, lens, 0, &len, 4);
  tq_launch l = {.batch = B, .kv_heads = H, .n_tokens = 1, .capacity = cap,
                 .k_cache = kc, .v_cache = vc, .seq_lens = lens, .q = q, .out = out};
  CHECK(tq_run(be, k, &l) == TQ_OK);
  tq_launch bad = l;
  bad.out = NULL;
  CHECK(tq_run(be, k, &bad) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "buffer out is missing");
  bad = l;
  bad.q = small;
  CHECK(tq_run(be, k, &bad) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "buffer q holds 8 bytes");
  bad = l;
  bad.capacity = 32;
  CHECK(tq_run(be, k, &bad) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "k_cache");
  bad = l;
  bad.n_tokens = 9;
  CHECK(tq_run(be, k, &bad) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "decode takes 1..8");
  len = 17;
  tq_write(be, lens, 0, &len, 4);
  CHECK(tq_run(be, k, &l) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "seq_lens[0] = 17");
  len = 10;
  tq_write(be, lens, 0, &len, 4);
  uint16_t p[128];
  for (int i = 0; i < 128; i++) p[i] = (uint16_t)(i % 64);
  p[70] = 3; /* head 1 repeats channel 3 */
  tq_write(be, perm, 0, p, sizeof p);
  bad = l;
  bad.channel_perm = perm;
  CHECK(tq_run(be, k, &bad) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "channel_perm of kv head 1");
  CHECK(tq_write(be, small, 4, p, 8) == TQ_ERR_INVALID);
  tq_dispatch_table old = {"old", "0.0.1", 0, NULL};
  CHECK(tq_register(be, &old) == TQ_ERR_INVALID);
  CHECK_CONTAINS(tq_error(be), "regenerate");
  tq_buffer *all[] = {kc, vc, lens, q, out, perm, small};
  for (int i = 0; i < 7; i++) tq_free(be, all[i]);
  tq_close(be);
}

/* ---- the disk cache ---------------------------------------------------- */
static const char *origin_now(const tq_variant *v) {
  tq_backend *be;
  tq_kernel *k;
  char err[256];
  static char origin[16];
  if (tq_open("c", &be, err, sizeof err)) return "open failed";
  tq_verify_result r;
  if (tq_get_kernel(be, v, TQ_OP_DECODE, &k) ||
      tq_verify(be, v, TQ_OP_DECODE, NULL, &r) || !r.passed) {
    tq_close(be);
    return "broken";
  }
  snprintf(origin, sizeof origin, "%s", tq_kernel_origin(k));
  tq_close(be);
  return origin;
}

static void corrupt(const char *path, long offset, int truncate_to) {
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  if (truncate_to >= 0) {
    fclose(f);
    CHECK(truncate(path, truncate_to) == 0);
    return;
  }
  fseek(f, offset, offset < 0 ? SEEK_END : SEEK_SET);
  int c = fgetc(f);
  fseek(f, -1, SEEK_CUR);
  fputc(c ^ 0x55, f);
  fclose(f);
}

static void disk_cache(const char *dir) {
  setenv("XDG_CACHE_HOME", dir, 1);
  tq_variant v = variant();
  v.seed = 12345; /* a variant no other test compiled */
  char path[1200];
  CHECK(tq_cache_path("c", tqg_variant_hash(&v), path, sizeof path));
  remove(path);
  CHECK(!strcmp(origin_now(&v), "jit"));
  CHECK(access(path, R_OK) == 0);
  CHECK(!strcmp(origin_now(&v), "cache"));
  corrupt(path, -100, -1); /* payload byte: checksum */
  CHECK(!strcmp(origin_now(&v), "jit"));
  CHECK(!strcmp(origin_now(&v), "cache"));
  corrupt(path, 0, -1); /* magic */
  CHECK(!strcmp(origin_now(&v), "jit"));
  corrupt(path, 0, 200); /* truncated */
  CHECK(!strcmp(origin_now(&v), "jit"));
  corrupt(path, 0, 0); /* empty */
  CHECK(!strcmp(origin_now(&v), "jit"));
  corrupt(path, 16, -1); /* hash field */
  CHECK(!strcmp(origin_now(&v), "jit"));
  corrupt(path, 24, -1); /* templates id: a build with other templates */
  CHECK(!strcmp(origin_now(&v), "jit"));
  FILE *f = fopen(path, "ab"); /* trailing garbage */
  fputs("junk", f);
  fclose(f);
  CHECK(!strcmp(origin_now(&v), "jit"));
  CHECK(!strcmp(origin_now(&v), "cache"));
  /* No compiler: a clear error, not a crash (the cache is bypassed by a
   * fresh seed). */
  v.seed = 777;
  setenv("CC", "/nonexistent/cc", 1);
  tq_backend *be;
  tq_kernel *k;
  char err[256];
  CHECK(tq_open("c", &be, err, sizeof err) == TQ_OK);
  CHECK(tq_get_kernel(be, &v, TQ_OP_ENCODE, &k) == TQ_ERR_UNAVAILABLE);
  CHECK_CONTAINS(tq_error(be), "no C compiler");
  tq_close(be);
  unsetenv("CC");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_runtime CACHE_DIR\n");
    return 2;
  }
  broken_kernels();
  bad_launches();
  disk_cache(argv[1]);
  return check_report("runtime");
}
