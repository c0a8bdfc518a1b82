/* cache.c - the JIT disk cache.
 *
 * File <dir>/<backend>/<hash as 16 hex digits>.bin:
 *   magic "TQGCACHE" (8 bytes) | u32 format version | u32 header bytes |
 *   u64 variant hash | u64 templates id | char[16] generator version |
 *   char[16] target (backend, and its device tag such as cuda-sm_90) |
 *   u64 payload bytes | u64 XXH64 of the payload | payload
 * Written to a temporary file in the same folder and renamed into place, so
 * a reader sees either nothing or a whole file.  A file whose magic,
 * version, hash, templates, generator, target, length or checksum disagree
 * (a template edit changes the code without changing the variant hash) is
 * deleted
 * and rebuilt, never trusted. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "emit.h"
#include "internal.h"

#define CACHE_MAGIC "TQGCACHE"
#define CACHE_FORMAT 2

typedef struct cache_header {
  char magic[8];
  uint32_t format;
  uint32_t header_bytes;
  uint64_t hash;
  uint64_t templates; /* tqg_templates_id of the build that wrote it */
  char generator[16];
  char backend[16];
  uint64_t payload_bytes;
  uint64_t checksum;
} cache_header;

int tq_cache_dir(char *buf, size_t n) {
  const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
  if (x && *x) return snprintf(buf, n, "%s/tqgen", x) < (int)n;
  if (home && *home) return snprintf(buf, n, "%s/.cache/tqgen", home) < (int)n;
  return 0;
}

int tq_cache_path(const char *backend, uint64_t hash, char *buf, size_t n) {
  char dir[1024];
  if (!tq_cache_dir(dir, sizeof dir)) return 0;
  return snprintf(buf, n, "%s/%s/%016llx.bin", dir, backend,
                  (unsigned long long)hash) < (int)n;
}

static void fill_header(cache_header *h, const char *backend, uint64_t hash,
                        const void *payload, size_t size) {
  memset(h, 0, sizeof *h);
  memcpy(h->magic, CACHE_MAGIC, 8);
  h->format = CACHE_FORMAT;
  h->header_bytes = sizeof *h;
  h->hash = hash;
  h->templates = tqg_templates_id();
  snprintf(h->generator, sizeof h->generator, "%s", TQ_GENERATOR_VERSION);
  snprintf(h->backend, sizeof h->backend, "%s", backend);
  h->payload_bytes = size;
  h->checksum = XXH64(payload, size, 0);
}

tq_status tq_cache_load(const char *backend, uint64_t hash, void **payload,
                        size_t *size) {
  char path[1200];
  *payload = NULL;
  *size = 0;
  if (!tq_cache_path(backend, hash, path, sizeof path)) return TQ_ERR_NOT_FOUND;
  FILE *f = fopen(path, "rb");
  if (!f) return TQ_ERR_NOT_FOUND;
  cache_header h, want;
  void *p = NULL;
  int ok = fread(&h, sizeof h, 1, f) == 1 && !memcmp(h.magic, CACHE_MAGIC, 8) &&
           h.format == CACHE_FORMAT && h.header_bytes == sizeof h &&
           h.hash == hash && h.payload_bytes > 0 && h.payload_bytes < (1ull << 32);
  if (ok) {
    p = malloc((size_t)h.payload_bytes);
    /* The payload must be exactly payload_bytes long: no less, no more. */
    ok = p && fread(p, 1, (size_t)h.payload_bytes, f) == h.payload_bytes &&
         fgetc(f) == EOF;
  }
  fclose(f);
  if (ok) {
    fill_header(&want, backend, hash, p, (size_t)h.payload_bytes);
    ok = !memcmp(&want, &h, sizeof h);
  }
  if (!ok) {
    free(p);
    remove(path); /* corrupt, truncated or stale: rebuild */
    return TQ_ERR_NOT_FOUND;
  }
  *payload = p;
  *size = (size_t)h.payload_bytes;
  return TQ_OK;
}

static int make_dirs(char *path) {
  for (char *p = path + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      int bad = mkdir(path, 0755) && errno != EEXIST;
      *p = '/';
      if (bad) return 0;
    }
  return !mkdir(path, 0755) || errno == EEXIST;
}

tq_status tq_file_replace(const char *path, const void *head, size_t head_n,
                          const void *body, size_t body_n, char *err, size_t errn) {
  char dir[1200], tmp[1300];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = 0;
    if (!make_dirs(dir)) {
      snprintf(err, errn, "cannot create cache folder %s: %s", dir, strerror(errno));
      return TQ_ERR_IO;
    }
  }
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path); /* mkstemp's template */
  int fd = mkstemp(tmp);
  if (fd < 0) {
    snprintf(err, errn, "cannot create %s: %s", tmp, strerror(errno));
    return TQ_ERR_IO;
  }
  FILE *f = fdopen(fd, "wb");
  int ok = f && (!head_n || fwrite(head, head_n, 1, f) == 1) &&
           (!body_n || fwrite(body, 1, body_n, f) == body_n);
  if (f) ok = !fclose(f) && ok;
  else close(fd);
  if (ok) chmod(tmp, 0644);
  if (!ok || rename(tmp, path)) {
    snprintf(err, errn, "cannot write cache file %s: %s", path, strerror(errno));
    remove(tmp);
    return TQ_ERR_IO;
  }
  return TQ_OK;
}

tq_status tq_cache_store(const char *backend, uint64_t hash,
                         const void *payload, size_t size, char *err,
                         size_t errn) {
  char path[1200];
  if (!tq_cache_path(backend, hash, path, sizeof path)) {
    snprintf(err, errn, "no cache folder: set XDG_CACHE_HOME or HOME");
    return TQ_ERR_IO;
  }
  cache_header h;
  fill_header(&h, backend, hash, payload, size);
  return tq_file_replace(path, &h, sizeof h, payload, size, err, errn);
}
