/* c.c - the portable C backend.  AOT: the dispatch table holds the
 * functions.  JIT: the generated source is compiled by the system C
 * compiler ($CC, else cc) into a shared object, which is cached on disk and
 * dlopened.  Memory is host memory. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "core.h"
#include "emit.h"

typedef struct c_module {
  void *dl; /* NULL for AOT */
  tq_c_kernel_fn fn[TQ_OP_COUNT];
  tq_c_workspace_fn workspace;
} c_module;

static const char *compiler(void) {
  const char *cc = getenv("CC");
  return cc && *cc ? cc : "cc";
}

/* Is `prog` an executable path or found on PATH? */
static int on_path(const char *prog) {
  if (strchr(prog, '/')) return access(prog, X_OK) == 0;
  const char *path = getenv("PATH");
  char buf[1024];
  while (path && *path) {
    const char *end = strchr(path, ':');
    size_t n = end ? (size_t)(end - path) : strlen(path);
    snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, prog);
    if (access(buf, X_OK) == 0) return 1;
    path = end ? end + 1 : NULL;
  }
  return 0;
}

static tq_status c_probe(char *err, size_t errn) {
  (void)err;
  (void)errn;
  return TQ_OK; /* AOT kernels need nothing; JIT checks for a compiler */
}

static tq_status c_open(void **state, char *err, size_t errn) {
  (void)err;
  (void)errn;
  *state = NULL;
  return TQ_OK;
}

static void c_close(void *state) { (void)state; }

static tq_status c_emit(const tq_variant *v, tqg_source *out, char *err,
                        size_t errn) {
  return tqg_emit_c(v, "jit", out, err, errn);
}

static tq_status read_file(const char *path, void **data, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return TQ_ERR_IO;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *p = n > 0 ? malloc((size_t)n) : NULL;
  int ok = p && fread(p, 1, (size_t)n, f) == (size_t)n;
  fclose(f);
  if (!ok) {
    free(p);
    return TQ_ERR_IO;
  }
  *data = p;
  *size = (size_t)n;
  return TQ_OK;
}


/* First diagnostic line "file:LINE:..." mapped back to its template. */
static void explain(const tqg_source *src, const char *log, const char *cfile,
                    char *err, size_t errn) {
  void *text = NULL;
  size_t n = 0;
  char first[400] = "(no compiler output)", where[300] = "";
  if (read_file(log, &text, &n) == TQ_OK) {
    char *t = realloc(text, n + 1);
    if (t) {
      text = t;
      t[n] = 0;
      char *line = strstr(t, "error");
      if (!line) line = t;
      while (line > t && line[-1] != '\n') line--;
      char *end = strchr(line, '\n');
      snprintf(first, sizeof first, "%.*s", end ? (int)(end - line) : (int)strlen(line), line);
      const char *at = strstr(line, ".c:");
      if (at) tqg_source_origin(src, atoi(at + 3), where, sizeof where);
    }
    free(text);
  }
  snprintf(err, errn, "%s failed on generated %s: %s%s%s", compiler(), cfile,
           first, *where ? " (from " : "", *where ? where : "");
  if (*where) strncat(err, ")", errn - strlen(err) - 1);
}

static tq_status c_compile(void *state, const tq_variant *v,
                           const tqg_source *src, void **binary, size_t *size,
                           char *err, size_t errn) {
  (void)state;
  char dir[] = "/tmp/tqgen-jit-XXXXXX", cfile[64], so[64], log[64], name[160];
  if (!on_path(compiler())) {
    snprintf(err, errn, "no C compiler for JIT: '%s' not found (set CC)", compiler());
    return TQ_ERR_UNAVAILABLE;
  }
  if (!mkdtemp(dir)) {
    snprintf(err, errn, "mkdtemp: %s", strerror(errno));
    return TQ_ERR_IO;
  }
  tqg_variant_name(v, name, sizeof name);
  snprintf(cfile, sizeof cfile, "%s/%.20s.c", dir, "kernel");
  snprintf(so, sizeof so, "%s/kernel.so", dir);
  snprintf(log, sizeof log, "%s/cc.log", dir);
  FILE *f = fopen(cfile, "wb");
  int ok = f && fwrite(src->text, 1, src->len, f) == src->len;
  if (f) ok = !fclose(f) && ok;
  tq_status st = TQ_OK;
  if (!ok) {
    snprintf(err, errn, "cannot write %s", cfile);
    st = TQ_ERR_IO;
  } else {
    char *argv[] = {(char *)compiler(), "-std=c11", "-O3", "-fPIC", "-shared",
                    "-w", "-o", so, cfile, "-lm", NULL};
    int rc = tq_spawn(argv, NULL, log);
    if (rc != 0) {
      explain(src, log, name, err, errn);
      st = TQ_ERR_COMPILE;
    } else if (read_file(so, binary, size)) {
      snprintf(err, errn, "cannot read %s", so);
      st = TQ_ERR_IO;
    }
  }
  remove(cfile);
  remove(so);
  remove(log);
  rmdir(dir);
  return st;
}

static tq_status bind(c_module *m, void *dl, const tq_variant *v, char *err,
                      size_t errn) {
  char sym[200], fn[260];
  tqg_c_symbol(v, sym, sizeof sym);
  for (int op = 0; op < TQ_OP_COUNT; op++) {
    snprintf(fn, sizeof fn, "%s_%s", sym, tqg_op_name((tq_op)op));
    void *p = dlsym(dl, fn);
    if (!p) {
      snprintf(err, errn, "symbol %s missing from the compiled module", fn);
      return TQ_ERR_COMPILE;
    }
    memcpy(&m->fn[op], &p, sizeof p);
  }
  snprintf(fn, sizeof fn, "%s_workspace", sym);
  void *p = dlsym(dl, fn);
  if (!p) {
    snprintf(err, errn, "symbol %s missing from the compiled module", fn);
    return TQ_ERR_COMPILE;
  }
  memcpy(&m->workspace, &p, sizeof p);
  return TQ_OK;
}

/* dlopen needs a file: the image goes to a private temporary file that is
 * unlinked once mapped. */
static tq_status c_load(void *state, const tq_variant *v, const void *binary,
                        size_t size, void **module, char *err, size_t errn) {
  (void)state;
  char path[] = "/tmp/tqgen-so-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) {
    snprintf(err, errn, "mkstemp: %s", strerror(errno));
    return TQ_ERR_IO;
  }
  int ok = write(fd, binary, size) == (ssize_t)size;
  close(fd);
  void *dl = ok ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
  remove(path);
  if (!dl) {
    snprintf(err, errn, "cannot load compiled module: %s", ok ? dlerror() : "write failed");
    return TQ_ERR_COMPILE;
  }
  c_module *m = calloc(1, sizeof *m);
  tq_status st = m ? bind(m, dl, v, err, errn) : TQ_ERR_NOMEM;
  if (st) {
    free(m);
    dlclose(dl);
    return st;
  }
  m->dl = dl;
  *module = m;
  return TQ_OK;
}

static tq_status c_load_aot(void *state, const tq_dispatch_entry *e,
                            void **module, char *err, size_t errn) {
  (void)state;
  c_module *m = calloc(1, sizeof *m);
  if (!m) return TQ_ERR_NOMEM;
  for (int op = 0; op < TQ_OP_COUNT; op++) {
    m->fn[op] = e->c_fn[op];
    if (!m->fn[op]) {
      snprintf(err, errn, "entry has no %s function", tqg_op_name((tq_op)op));
      free(m);
      return TQ_ERR_INVALID;
    }
  }
  m->workspace = e->c_workspace;
  *module = m;
  return TQ_OK;
}

static void c_unload(void *state, void *module) {
  (void)state;
  c_module *m = module;
  if (m && m->dl) dlclose(m->dl);
  free(m);
}

static tq_status c_alloc(void *state, size_t bytes, void **mem, char *err,
                        size_t errn) {
  (void)state;
  (void)err;
  (void)errn;
  *mem = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
  return *mem ? TQ_OK : TQ_ERR_NOMEM;
}

static void c_free(void *state, void *mem) {
  (void)state;
  free(mem);
}

static tq_status c_write(void *state, void *mem, size_t off, const void *src,
                         size_t n, char *err, size_t errn) {
  (void)state;
  (void)err;
  (void)errn;
  memcpy((char *)mem + off, src, n);
  return TQ_OK;
}

static tq_status c_read(void *state, const void *mem, size_t off, void *dst,
                        size_t n, char *err, size_t errn) {
  (void)state;
  (void)err;
  (void)errn;
  memcpy(dst, (const char *)mem + off, n);
  return TQ_OK;
}

static void *c_host_ptr(void *state, void *mem) {
  (void)state;
  return mem;
}

static size_t c_workspace(void *state, void *module, tq_op op,
                          const tq_kargs *a) {
  (void)state;
  c_module *m = module;
  return m->workspace ? m->workspace((int)op, a) : 0;
}

static tq_status c_launch(void *state, void *module, tq_op op,
                          const tq_kargs *a, char *err, size_t errn) {
  (void)state;
  c_module *m = module;
  int rc = m->fn[op](a);
  if (rc) {
    snprintf(err, errn, "kernel returned %d", rc);
    return TQ_ERR_INVALID;
  }
  return TQ_OK;
}

static tq_status c_sync(void *state, char *err, size_t errn) {
  (void)state;
  (void)err;
  (void)errn;
  return TQ_OK;
}

const tq_backend_ops tq_backend_c = {
    .name = "c",
    .binary_kind = "so",
    .probe = c_probe,
    .open = c_open,
    .close = c_close,
    .emit = c_emit,
    .compile = c_compile,
    .load = c_load,
    .load_aot = c_load_aot,
    .unload = c_unload,
    .alloc = c_alloc,
    .free = c_free,
    .write = c_write,
    .read = c_read,
    .host_ptr = c_host_ptr,
    .workspace = c_workspace,
    .launch = c_launch,
    .sync = c_sync,
};
