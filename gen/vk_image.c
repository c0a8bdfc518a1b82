/* vk_image.c - the Vulkan module image: every stage's SPIR-V and the
 * variant's constant tables in one blob, the payload of the JIT disk cache.
 * All fields little-endian u32, all offsets from the image's start:
 *   "TQVK" | version 1 | stage count n | table floats f
 *   n records: name[16] (NUL-padded) | workgroup x, y, z | push-constant
 *              bytes | binding mask | code offset | code bytes
 *   f32 tables[f] | SPIR-V words of each stage, in record order */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vulkan.h"

#define IMAGE_MAGIC 0x4B565154u /* "TQVK" */
#define IMAGE_VERSION 1u
#define HEAD_WORDS 4
#define RECORD_WORDS 11 /* 4 name + 7 */

typedef struct built {
  char name[16];
  tqg_vk_stage_id id;
  uint32_t *words;
  size_t n;
} built;

tq_status tqg_vk_build(const tq_variant *v, const tqg_source *src,
                       const char *file, int subgroups, int fast_sg,
                       void **image, size_t *size, char *err, size_t errn) {
  *image = NULL;
  *size = 0;
  built b[TQG_VK_MAX_STAGES];
  int n = 0;
  tq_status st = TQ_OK;
  tqg_vk_tables t;
  if ((st = tqg_vk_tables_build(v, &t, err, errn))) return st;
  for (int s = 0; s < TQG_VK_STAGE_COUNT && !st; s++) {
    /* attend: plain, with subgroups, or both (the loader picks). */
    for (int sg = 0; sg < 2 && !st; sg++) {
      if (s == TQG_VK_ATTEND ? !(subgroups == 2 || subgroups == sg) : sg)
        continue;
      snprintf(b[n].name, sizeof b[n].name, "%s%s",
               tqg_vk_stage_name((tqg_vk_stage_id)s), sg ? ".sg" : "");
      b[n].id = (tqg_vk_stage_id)s;
      st = tqg_spirv_compile(src, file, (tqg_vk_stage_id)s, sg, &b[n].words,
                             &b[n].n, err, errn);
      if (!st) n++;
    }
  }
  /* The fast attend stage, for one subgroup size. */
  if (!st && TQG_VK_FAST_OK(fast_sg) && tqg_vk_fast(v)) {
    snprintf(b[n].name, sizeof b[n].name, "attend.f%d", fast_sg);
    b[n].id = TQG_VK_ATTEND;
    st = tqg_spirv_compile(src, file, TQG_VK_ATTEND, fast_sg, &b[n].words,
                           &b[n].n, err, errn);
    if (!st) n++;
  }
  size_t bytes = 4 * (HEAD_WORDS + (size_t)RECORD_WORDS * n) + 4 * t.count;
  for (int i = 0; i < n; i++) bytes += 4 * b[i].n;
  uint32_t *img = st ? NULL : calloc(1, bytes);
  if (!st && !img) st = TQ_ERR_NOMEM;
  if (!st) {
    img[0] = IMAGE_MAGIC;
    img[1] = IMAGE_VERSION;
    img[2] = (uint32_t)n;
    img[3] = (uint32_t)t.count;
    size_t at = HEAD_WORDS + (size_t)RECORD_WORDS * n;
    memcpy(img + at, t.data, 4 * t.count);
    at += t.count;
    for (int i = 0; i < n; i++) {
      uint32_t *r = img + HEAD_WORDS + (size_t)RECORD_WORDS * i;
      memcpy(r, b[i].name, 16);
      r[4] = TQG_VK_WORKGROUP;
      if (!strncmp(b[i].name, "attend.f", 8))
        r[4] = (uint32_t)(TQG_VK_FAST_WORKERS * fast_sg);
      r[5] = r[6] = 1;
      r[7] = TQG_VK_PUSH_BYTES;
      r[8] = tqg_vk_stage_bindings(b[i].id);
      r[9] = (uint32_t)(4 * at);
      r[10] = (uint32_t)(4 * b[i].n);
      memcpy(img + at, b[i].words, 4 * b[i].n);
      at += b[i].n;
    }
    *image = img;
    *size = bytes;
  }
  for (int i = 0; i < n; i++) free(b[i].words);
  tqg_vk_tables_free(&t);
  return st;
}

tq_status tqg_vk_parse(const void *image, size_t size, tqg_vk_image *out,
                       char *err, size_t errn) {
  memset(out, 0, sizeof *out);
  const uint32_t *w = image;
  if (!image || size < 4 * HEAD_WORDS || size % 4 || (uintptr_t)image % 4 ||
      w[0] != IMAGE_MAGIC || w[1] != IMAGE_VERSION) {
    snprintf(err, errn, "not a Vulkan module image (version %u)",
             IMAGE_VERSION);
    return TQ_ERR_INVALID;
  }
  size_t n = w[2], f = w[3], words = size / 4;
  size_t head = HEAD_WORDS + RECORD_WORDS * n;
  if (n < 1 || n > TQG_VK_MAX_STAGES || head + f > words) {
    snprintf(err, errn,
             "module image: %zu stages, %zu table floats in %zu bytes", n, f,
             size);
    return TQ_ERR_INVALID;
  }
  out->n = (int)n;
  out->tables = (const float *)(w + head);
  out->table_floats = f;
  for (size_t i = 0; i < n; i++) {
    const uint32_t *r = w + HEAD_WORDS + RECORD_WORDS * i;
    tqg_vk_shader *s = &out->shader[i];
    memcpy(s->stage, r, 16);
    s->stage[15] = 0;
    s->workgroup[0] = r[4];
    s->workgroup[1] = r[5];
    s->workgroup[2] = r[6];
    s->push_bytes = r[7];
    s->bindings = r[8];
    size_t off = r[9], len = r[10];
    if (off % 4 || len % 4 || len < 20 || off < 4 * (head + f) || off > size ||
        len > size - off) {
      snprintf(err, errn, "module image: stage '%s' lies outside the image",
               s->stage);
      return TQ_ERR_INVALID;
    }
    s->code = w + off / 4;
    s->code_bytes = len;
  }
  return TQ_OK;
}
