/* test_spec.c - the spec loader: the shipped specs expand to the variants
 * they promise, and every bad spec is refused with a message naming the file,
 * the line, the key and the allowed values, without crashing or hanging.
 *
 * Usage: test_spec <source dir> */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/core.h"
#include "spec.h"

static const char *src_dir;

static tq_status load(const char *rel, tqg_spec *s, char *err, size_t n,
                      char *path, size_t pn) {
  snprintf(path, pn, "%s/%s", src_dir, rel);
  return tqg_spec_load(path, s, err, n);
}

static void name_of(const tq_variant *v, char *buf, size_t n) {
  tqg_variant_name(v, buf, n);
}

static int find_variant(const tqg_spec *s, const char *name) {
  char buf[160];
  for (int i = 0; i < s->n_variants; i++) {
    name_of(&s->variants[i], buf, sizeof buf);
    if (strcmp(buf, name) == 0) return i;
  }
  return -1;
}

/* Every variant is valid and no two share a canonical name. */
static void check_variants(const tqg_spec *s) {
  char a[160], b[160], msg[256];
  for (int i = 0; i < s->n_variants; i++) {
    CHECK(tqg_variant_check(&s->variants[i], msg, sizeof msg) == TQ_OK);
    name_of(&s->variants[i], a, sizeof a);
    for (int j = 0; j < i; j++) {
      name_of(&s->variants[j], b, sizeof b);
      CHECK(strcmp(a, b) != 0);
    }
  }
}

static void test_qwen3(void) {
  tqg_spec s;
  char err[1024] = "", path[1024], name[160];
  tq_status st =
      load("specs/qwen3.lua", &s, err, sizeof err, path, sizeof path);
  CHECK(st == TQ_OK);
  if (st != TQ_OK) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK(strcmp(s.family, "qwen3") == 0);
  CHECK(strcmp(s.file, path) == 0);
  CHECK(s.n_models == 2);
  CHECK(strcmp(s.models[0].name, "Qwen3-0.6B") == 0);
  CHECK(s.models[1].head_dim == 128 && s.models[1].q_heads == 32 &&
        s.models[1].kv_heads == 8);
  /* 2 groups (2, 4) x 5 quants x 2 dtypes x 2 layouts. */
  CHECK(s.n_variants == 40);
  check_variants(&s);
  /* Order: model, quant, dtype, layout, as written. */
  name_of(&s.variants[0], name, sizeof name);
  CHECK(strcmp(name, "d128_g2_k4v4_f16") == 0);
  name_of(&s.variants[1], name, sizeof name);
  CHECK(strcmp(name, "d128_g2_k4v4_f16_paged16") == 0);
  name_of(&s.variants[2], name, sizeof name);
  CHECK(strcmp(name, "d128_g2_k4v4_bf16") == 0);
  name_of(&s.variants[39], name, sizeof name);
  CHECK(strcmp(name, "d128_g4_k4v4mm32_bf16_paged16") == 0);
  int i = find_variant(&s, "d128_g4_k3v3_o32b4_bf16_paged16");
  /* model 2 (20 on), quant 3 (4 each), bf16 (2 each), paged. */
  CHECK(i == 20 + 2 * 4 + 1 * 2 + 1);
  if (i >= 0) {
    const tq_variant *v = &s.variants[i];
    CHECK(v->head_dim == 128 && v->group == 4);
    CHECK(v->key_bits == 3 && v->value_bits == 3);
    CHECK(v->outlier_count == 32 && v->outlier_bits == 4);
    CHECK(v->dtype == TQ_BF16 && v->layout == TQ_PAGED && v->block_size == 16);
    CHECK(v->qjl == 0 && v->seed == TQ_DEFAULT_SEED);
  }
  i = find_variant(&s, "d128_g2_k2v2_qjl_f16");
  CHECK(i >= 0 && s.variants[i].qjl == 1 && s.variants[i].key_bits == 2);
  i = find_variant(&s, "d128_g2_k4v4mm32_f16");
  CHECK(i >= 0 && s.variants[i].value_method == TQ_VALUE_MINMAX &&
        s.variants[i].value_group == 32);
  for (int b = 0; b < TQG_BACKEND_COUNT; b++) CHECK(s.backend[b].enabled);
  CHECK(strcmp(s.backend[TQG_BACKEND_C].cflags, "-O2") == 0);
  CHECK(strcmp(s.backend[TQG_BACKEND_CUDA].archs, "sm_80,sm_89,sm_90") == 0);
  CHECK(s.backend[TQG_BACKEND_VULKAN].subgroups == 1);
  CHECK(s.backend[TQG_BACKEND_WGSL].subgroups == 1); /* both WGSL flavours */
  CHECK(s.backend[TQG_BACKEND_C].subgroups == -1);

  /* Same spec in, same variants out. */
  tqg_spec again;
  CHECK(tqg_spec_load(path, &again, err, sizeof err) == TQ_OK);
  CHECK(again.n_variants == s.n_variants);
  for (int k = 0; k < s.n_variants && k < again.n_variants; k++) {
    char other[160];
    name_of(&s.variants[k], name, sizeof name);
    name_of(&again.variants[k], other, sizeof other);
    CHECK(strcmp(name, other) == 0);
  }
  tqg_spec_free(&again);
  tqg_spec_free(&s);
  CHECK(s.variants == NULL && s.n_variants == 0);
}

static void test_llama3_smollm2(void) {
  tqg_spec s;
  char err[1024] = "", path[1024], name[160];
  CHECK(load("specs/llama3.lua", &s, err, sizeof err, path, sizeof path) ==
        TQ_OK);
  CHECK_CONTAINS(s.family, "llama3");
  /* 1 group x 4 quants x bf16 x contiguous. */
  CHECK(s.n_variants == 4);
  check_variants(&s);
  if (s.n_variants == 4) {
    name_of(&s.variants[0], name, sizeof name);
    CHECK(strcmp(name, "d128_g4_k4v4_bf16") == 0);
    name_of(&s.variants[3], name, sizeof name);
    CHECK(strcmp(name, "d128_g4_k2v2_qjl_bf16") == 0);
  }
  tqg_spec_free(&s);

  CHECK(load("specs/smollm2.lua", &s, err, sizeof err, path, sizeof path) ==
        TQ_OK);
  CHECK_CONTAINS(s.family, "smollm2");
  CHECK(s.n_models == 1 && s.models[0].q_heads == 9 &&
        s.models[0].kv_heads == 3);
  /* 1 group x 4 quants x 2 dtypes x 2 layouts. */
  CHECK(s.n_variants == 16);
  check_variants(&s);
  if (s.n_variants == 16) {
    name_of(&s.variants[0], name, sizeof name);
    CHECK(strcmp(name, "d64_g3_k4v4_f32") == 0);
    CHECK(s.variants[0].dtype == TQ_F32 && s.variants[0].head_dim == 64 &&
          s.variants[0].group == 3);
  }
  CHECK(find_variant(&s, "d64_g3_k3v3_o16b4_f16_paged16") >= 0);
  tqg_spec_free(&s);
}

/* Defaults, dedup and the hand-written forms of tests/good_specs. */
static void test_features(void) {
  tqg_spec s;
  char err[1024] = "", path[1024], name[160];
  tq_status st = load("tests/good_specs/features.lua", &s, err, sizeof err,
                      path, sizeof path);
  CHECK(st == TQ_OK);
  if (st != TQ_OK) {
    fprintf(stderr, "  %s\n", err);
    return;
  }
  CHECK(s.n_models == 3);
  CHECK(s.models[0].head_dim == 128); /* 4096 / 32 is the float 128.0 */
  /* Models a and b share a shape; one quant is a duplicate; { paged = 32 }
   * and paged(32) are one layout: 2 shapes x 3 quants x f16 x 2 layouts. */
  CHECK(s.n_variants == 12);
  check_variants(&s);
  name_of(&s.variants[0], name, sizeof name);
  CHECK(strcmp(name, "d128_g2_k4v4_f16_paged32") == 0);
  int i = find_variant(&s, "d128_g2_k3v2_o8h_nc_sdeadbeefcafef00d_f16");
  CHECK(i >= 0);
  if (i >= 0) {
    CHECK(s.variants[i].seed == 0xdeadbeefcafef00dull);
    CHECK(s.variants[i].outlier_bits == TQ_OUTLIER_F16);
    CHECK(s.variants[i].norm_correction == 1);
  }
  /* outliers = { count = 0 } is no outliers, whatever its bits. */
  i = find_variant(&s, "d64_g3_k2v4_f16");
  CHECK(i >= 0 && s.variants[i].outlier_count == 0);
  CHECK(s.backend[TQG_BACKEND_C].enabled);
  CHECK(!s.backend[TQG_BACKEND_CUDA].enabled &&
        !s.backend[TQG_BACKEND_VULKAN].enabled &&
        !s.backend[TQG_BACKEND_WGSL].enabled);
  tqg_spec_free(&s);
}

/* A refused spec: TQ_ERR_INVALID, the message starts with "<path>:<line>: "
 * ("<path>: " when line is 0) and contains every fragment; the spec is left
 * empty. */
static void expect_error(const char *path, int line, const char *const *frags) {
  tqg_spec s;
  char err[1024] = "", prefix[1300];
  tq_status st = tqg_spec_load(path, &s, err, sizeof err);
  if (st != TQ_ERR_INVALID)
    fprintf(stderr, "%s: status %d: %s\n", path, st, err);
  CHECK(st == TQ_ERR_INVALID);
  CHECK(s.variants == NULL && s.n_variants == 0);
  if (line)
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
  else
    snprintf(prefix, sizeof prefix, "%s: ", path);
  if (strncmp(err, prefix, strlen(prefix)) != 0) {
    fprintf(stderr, "  \"%s\" does not start with \"%s\"\n", err, prefix);
    CHECK(!"message starts with <file>:<line>");
  }
  for (int i = 0; frags[i]; i++) CHECK_CONTAINS(err, frags[i]);
}

typedef struct bad_case {
  const char *file; /* under tests/bad_specs/ */
  int line;         /* 0: the message has no line */
  const char *frags[4];
} bad_case;

#define ALLOWED_QUANT                                               \
  "allowed keys: key_bits, value_bits, value_method, value_group, " \
  "outliers, qjl, norm_correction, seed"
#define NOT_IN_SANDBOX "is not available in a spec"

static const bad_case bad_cases[] = {
    /* unknown keys, at every level */
    {"quant_unknown_key", 9, {"quant: unknown key 'key_bit'; " ALLOWED_QUANT}},
    {"model_unknown_key",
     5,
     {"model 'm': unknown key 'heads'; allowed keys: name, head_dim, q_heads, "
      "kv_heads"}},
    {"model_name_typo",
     5,
     {"model: unknown key 'nam'; allowed keys: name, head_dim"}},
    {"family_unknown_key",
     2,
     {"family: unknown key 'dtype'; allowed keys: name, models, quant, dtypes, "
      "layouts, backends"}},
    {"outliers_unknown_key",
     8,
     {"quant: outliers: unknown key 'bit'; allowed keys: count, bits"}},
    {"backend_unknown",
     2,
     {"backends: unknown backend 'metal'; allowed backends: c, cuda, vulkan, "
      "wgsl"}},
    {"backend_option_unknown",
     2,
     {"backends.cuda: unknown key 'arch'; allowed keys: archs"}},
    /* types */
    {"type_string_for_int",
     8,
     {"quant: key_bits must be an integer, got string"}},
    {"type_float_for_int",
     5,
     {"model 'm': head_dim must be an integer, got 128.5"}},
    {"type_number_for_bool",
     8,
     {"quant: qjl must be a boolean (true or false), got number"}},
    {"subgroups_string",
     2,
     {"backends.vulkan: subgroups must be a boolean (true or false), got "
      "string"}},
    {"paged_string",
     10,
     {"paged: block_size must be an integer", "got string"}},
    {"missing_key_bits", 8, {"quant: missing key 'key_bits' (an integer)"}},
    /* ranges, through tqg_variant_check, at the line of the culprit */
    {"key_bits_0", 8, {"quant: key_bits = 0: allowed 1..8"}},
    {"key_bits_9", 8, {"quant: key_bits = 9: allowed 1..8"}},
    {"head_dim_100",
     5,
     {"model 'm': head_dim = 100: allowed values are multiples of 16 from 16 "
      "to 512"}},
    {"head_dim_528",
     5,
     {"model 'm': head_dim = 528: allowed values are multiples of 16"}},
    {"outliers_count",
     9,
     {"quant: outliers.count = 128: allowed 0..127", "model 'm'"}},
    {"outliers_bits", 8, {"quant: outliers.bits = 12: allowed 1..8 or 16"}},
    {"q_heads_multiple",
     6,
     {"model 'x': q_heads = 12 is not a multiple of kv_heads = 8"}},
    {"group_too_large",
     5,
     {"model 'm': group (q_heads / kv_heads) = 128: allowed 1..64"}},
    {"qjl_key_bits_1",
     8,
     {"quant: qjl = true needs key_bits >= 2", "got key_bits = 1"}},
    {"minmax_group",
     8,
     {"quant: value_group = 48: must divide head_dim = 128"}},
    {"paged_zero", 11, {"paged: block_size = 0: allowed 1..1024"}},
    /* allowed values of enumerations */
    {"dtype_unknown",
     2,
     {"family: dtypes[2] = 'fp8' is not a dtype; allowed: \"f16\", \"bf16\", "
      "\"f32\""}},
    {"value_method_unknown",
     8,
     {"quant: value_method = 'mm' is not allowed; allowed: \"tq\", "
      "\"minmax\""}},
    {"value_group_tq",
     8,
     {"quant: value_group applies only to value_method = \"minmax\""}},
    {"layout_unknown",
     2,
     {"family: layouts[2]: 'paged' is not a layout; allowed: \"contiguous\" or "
      "paged(block_size)"}},
    {"cflags_shell", 2, {"backends.c: cflags: character ';' is not allowed"}},
    {"cuda_arch",
     2,
     {"backends.cuda: archs[2] = '90' is not a CUDA arch", "\"sm_90\""}},
    /* structure */
    {"models_empty", 2, {"family: models is empty"}},
    {"plain_table_quant",
     2,
     {"family: quant[2] is a plain table, not a quant { ... }"}},
    {"duplicate_model", 6, {"model 'm': name already used"}},
    {"returns_nothing",
     2,
     {"must end with 'return family { ... }'", "returned nothing"}},
    {"returns_plain_table", 2, {"returned a plain table"}},
    {"too_many_variants",
     7,
     {"family: expands to 1536 variants; at most 1024"}},
    /* the sandbox */
    {"io_open", 2, {"'io' " NOT_IN_SANDBOX}},
    {"os_execute", 2, {"'os' " NOT_IN_SANDBOX}},
    {"require", 2, {"'require' " NOT_IN_SANDBOX}},
    {"dofile", 2, {"'dofile' " NOT_IN_SANDBOX}},
    {"loadfile", 2, {"'loadfile' " NOT_IN_SANDBOX}},
    {"load", 2, {"'load' " NOT_IN_SANDBOX}},
    {"string_dump", 2, {"attempt to call a nil value (field 'dump')"}},
    {"global_typo", 5, {"unknown global 'modle'"}},
    {"gc_finalizer", 2, {"setmetatable: __gc is not allowed in a spec"}},
    {"infinite_loop",
     3,
     {"spec ran more than 50000000 instructions (infinite loop?)"}},
    {"hidden_loop", 3, {"spec ran more than 50000000 instructions"}},
    {"memory_table", 3, {"spec exceeded the 64 MiB memory limit"}},
    {"memory_string", 0, {"spec exceeded the 64 MiB memory limit"}},
    /* Lua's own errors keep Lua's words */
    {"syntax_error", 8, {"'}' expected near 'value_bits'"}},
    {"error_table", 0, {"spec raised an error that is not a string (table)"}},
};

static void test_bad_specs(void) {
  char path[1024];
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    snprintf(path, sizeof path, "%s/tests/bad_specs/%s.lua", src_dir,
             bad_cases[i].file);
    expect_error(path, bad_cases[i].line, bad_cases[i].frags);
  }
}

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, n, f) == n);
  fclose(f);
}

/* Specs that are easier made here than kept as files. */
static void test_generated(void) {
  char dir[] = "/tmp/tqg_test_spec_XXXXXX", path[1200], sub[1024], err[1024];
  tqg_spec s;
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  /* A precompiled chunk: the signature ESC "Lua" then bytes. */
  static const char binary[] =
      "\x1bLua\x54\x00\x19\x93\r\n\x1a\n\x04\x08\x08junk";
  snprintf(path, sizeof path, "%s/binary.lua", dir);
  write_file(path, binary, sizeof binary - 1);
  expect_error(path, 0,
               (const char *const[]){"precompiled (binary) Lua chunk",
                                     "must be Lua source text", NULL});
  unlink(path);

  /* Missing file: an I/O error naming it. */
  snprintf(path, sizeof path, "%s/missing.lua", dir);
  CHECK(tqg_spec_load(path, &s, err, sizeof err) == TQ_ERR_IO);
  CHECK_CONTAINS(err, path);
  CHECK_CONTAINS(err, "cannot open the spec");

  /* Lua shortens paths over 60 characters to "...tail" in its messages;
   * the loader puts the full path back. */
  snprintf(sub, sizeof sub,
           "%s/a_directory_name_long_enough_that_lua_abbreviates_it", dir);
  CHECK(mkdir(sub, 0700) == 0);
  snprintf(path, sizeof path, "%s/syntax.lua", sub);
  static const char syntax[] = "return family {\n  name = = \"x\",\n}\n";
  write_file(path, syntax, sizeof syntax - 1);
  expect_error(path, 2,
               (const char *const[]){"unexpected symbol near '='", NULL});
  static const char global[] = "local x = 1\nreturn famliy { }\n";
  write_file(path, global, sizeof global - 1);
  expect_error(path, 2, (const char *const[]){"unknown global 'famliy'", NULL});
  unlink(path);
  rmdir(sub);

  /* No error buffer, or a tiny one: still refused, nothing overflows. */
  snprintf(path, sizeof path, "%s/tests/bad_specs/key_bits_9.lua", src_dir);
  CHECK(tqg_spec_load(path, &s, NULL, 0) == TQ_ERR_INVALID);
  char tiny[8];
  memset(tiny, 'x', sizeof tiny);
  CHECK(tqg_spec_load(path, &s, tiny, sizeof tiny) == TQ_ERR_INVALID);
  CHECK(strlen(tiny) == sizeof tiny - 1);
  rmdir(dir);
}

static void test_backend_names(void) {
  for (int b = 0; b < TQG_BACKEND_COUNT; b++)
    CHECK(tqg_backend_parse(tqg_backend_name((tqg_backend)b)) ==
          (tqg_backend)b);
  CHECK(strcmp(tqg_backend_name(TQG_BACKEND_VULKAN), "vulkan") == 0);
  CHECK(tqg_backend_parse("metal") == TQG_BACKEND_COUNT);
  CHECK(tqg_backend_parse("C") == TQG_BACKEND_COUNT);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s <source dir>\n", argv[0]);
    return 2;
  }
  src_dir = argv[1];
  test_qwen3();
  test_llama3_smollm2();
  test_features();
  test_bad_specs();
  test_generated();
  test_backend_names();
  return check_report("test_spec");
}
