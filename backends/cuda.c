/* cuda.c - the CUDA backend.  The driver (libcuda.so.1) and NVRTC are
 * dlopened on first use and their few types declared here, so this file
 * builds without the toolkit and the runtime runs without a GPU: probe then
 * says what is missing.  JIT: generated CUDA -> NVRTC -> CUBIN for the
 * device's arch, cached on disk and loaded with cuModuleLoadData.  AOT: the
 * dispatch entry's fatbin.  Every kernel takes one tq_kargs by value; the
 * launch geometry comes from cuda_plan.c. */
#define _GNU_SOURCE
#include "cuda.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core.h"
#include "cuda_plan.h"
#include "emit.h"

/* ---- The driver API: the subset used here, as cuda.h declares it ------ */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef unsigned long long CUdeviceptr;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76
#define CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN 97
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION 6
#define CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES 1
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8
/* Shared memory (static + dynamic) a block may use without opting in. */
#define CUDA_DEFAULT_SHARED_LIMIT (48 << 10)
/* cuMemAlloc refuses 0 bytes; an empty buffer still gets an address. */
#define CUDA_MIN_ALLOC 256
#define CUDA_MAX_ENTRIES 8

/* cuLaunchKernelEx's configuration, as cuda.h lays it out. */
typedef struct cu_launch_attribute {
  int id;
  char pad[4];
  union {
    char pad[64];
    int programmatic_stream_serialization_allowed;
  } value;
} cu_launch_attribute;
typedef struct cu_launch_config {
  unsigned grid_x, grid_y, grid_z, block_x, block_y, block_z, shared_bytes;
  CUstream stream;
  cu_launch_attribute *attrs;
  unsigned n_attrs;
} cu_launch_config;
_Static_assert(sizeof(cu_launch_attribute) == 72 && offsetof(cu_launch_config, attrs) == 40 &&
                   sizeof(cu_launch_config) == 56,
               "cuLaunchKernelEx's structures as cuda.h has them");

typedef struct cu_api {
  CUresult (*Init)(unsigned flags);
  CUresult (*DeviceGetCount)(int *count);
  CUresult (*DeviceGet)(CUdevice *dev, int ordinal);
  CUresult (*DeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*DeviceGetAttribute)(int *value, int attrib, CUdevice dev);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext *ctx, CUdevice dev);
  CUresult (*DevicePrimaryCtxRelease)(CUdevice dev);
  CUresult (*CtxSetCurrent)(CUcontext ctx);
  CUresult (*CtxSynchronize)(void);
  CUresult (*ModuleLoadData)(CUmodule *mod, const void *image);
  CUresult (*ModuleUnload)(CUmodule mod);
  CUresult (*ModuleGetFunction)(CUfunction *fn, CUmodule mod, const char *name);
  CUresult (*FuncGetAttribute)(int *value, int attrib, CUfunction fn);
  CUresult (*FuncSetAttribute)(CUfunction fn, int attrib, int value);
  CUresult (*MemAlloc)(CUdeviceptr *ptr, size_t bytes);
  CUresult (*MemFree)(CUdeviceptr ptr);
  CUresult (*MemcpyHtoD)(CUdeviceptr dst, const void *src, size_t bytes);
  CUresult (*MemcpyDtoH)(void *dst, CUdeviceptr src, size_t bytes);
  CUresult (*LaunchKernel)(CUfunction fn, unsigned gx, unsigned gy, unsigned gz,
                           unsigned bx, unsigned by, unsigned bz,
                           unsigned shared, CUstream stream, void **params,
                           void **extra);
  CUresult (*LaunchKernelEx)(const cu_launch_config *config, CUfunction fn, void **params,
                             void **extra); /* optional (CUDA 12) */
  CUresult (*OccupancyMaxActiveBlocksPerMultiprocessor)(int *blocks, CUfunction fn,
                                                         int threads, size_t shared);
  CUresult (*GetErrorName)(CUresult r, const char **s);   /* optional */
  CUresult (*GetErrorString)(CUresult r, const char **s); /* optional */
} cu_api;

/* ---- NVRTC: the subset used here, as nvrtc.h declares it --------------- */
typedef int nvrtcResult;
typedef struct _nvrtcProgram *nvrtcProgram;
#define NVRTC_SUCCESS 0
#define NVRTC_ERROR_OUT_OF_MEMORY 1
#define NVRTC_ERROR_INVALID_OPTION 5
#define NVRTC_ERROR_COMPILATION 6

typedef struct nvrtc_api {
  const char *(*GetErrorString)(nvrtcResult r);
  nvrtcResult (*Version)(int *major, int *minor);
  nvrtcResult (*CreateProgram)(nvrtcProgram *p, const char *src,
                               const char *name, int n_headers,
                               const char *const *headers,
                               const char *const *include_names);
  nvrtcResult (*DestroyProgram)(nvrtcProgram *p);
  nvrtcResult (*CompileProgram)(nvrtcProgram p, int n, const char *const *opts);
  nvrtcResult (*GetProgramLogSize)(nvrtcProgram p, size_t *size);
  nvrtcResult (*GetProgramLog)(nvrtcProgram p, char *log);
  nvrtcResult (*GetPTXSize)(nvrtcProgram p, size_t *size);
  nvrtcResult (*GetPTX)(nvrtcProgram p, char *ptx);
  nvrtcResult (*GetCUBINSize)(nvrtcProgram p, size_t *size); /* optional */
  nvrtcResult (*GetCUBIN)(nvrtcProgram p, char *cubin);      /* optional */
  nvrtcResult (*GetNumSupportedArchs)(int *n);               /* optional */
  nvrtcResult (*GetSupportedArchs)(int *archs);              /* optional */
} nvrtc_api;

/* Both libraries are loaded once per process and never unloaded (unloading
 * libcuda is not supported); after loading they are read-only, so the
 * tables are safe to share between threads. */
static cu_api cu;
static tq_status cu_status;
static char cu_message[512];
static pthread_once_t cu_once = PTHREAD_ONCE_INIT;

static nvrtc_api nv;
static tq_status nv_status;
static char nv_message[1024];
static int nv_major, nv_minor;
static pthread_once_t nv_once = PTHREAD_ONCE_INIT;

/* The first of the NULL-terminated names that lib exports, stored into the
 * function pointer at fp (void * -> function pointer through memcpy). */
static int bind_sym(void *lib, void *fp, const char *const *names) {
  for (; *names; names++) {
    void *p = dlsym(lib, *names);
    if (p) {
      memcpy(fp, &p, sizeof p);
      return 1;
    }
  }
  return 0;
}

#define NAMES(...) ((const char *const[]){__VA_ARGS__, NULL})

typedef struct sym_spec {
  size_t offset; /* of the function pointer in its table */
  int required;
  const char *const *names;
} sym_spec;

/* Binds every entry of specs; on a missing required one names it in msg. */
static int bind_all(void *lib, void *table, const sym_spec *specs, int n,
                    char *msg, size_t msgn) {
  for (int i = 0; i < n; i++)
    if (!bind_sym(lib, (char *)table + specs[i].offset, specs[i].names) &&
        specs[i].required) {
      snprintf(msg, msgn, "symbol %s missing", specs[i].names[0]);
      return 0;
    }
  return 1;
}

#define CU(field, req, ...) \
  { offsetof(cu_api, field), req, NAMES(__VA_ARGS__) }
static const sym_spec cu_syms[] = {
    CU(Init, 1, "cuInit"),
    CU(DeviceGetCount, 1, "cuDeviceGetCount"),
    CU(DeviceGet, 1, "cuDeviceGet"),
    CU(DeviceGetName, 1, "cuDeviceGetName"),
    CU(DeviceGetAttribute, 1, "cuDeviceGetAttribute"),
    CU(DevicePrimaryCtxRetain, 1, "cuDevicePrimaryCtxRetain"),
    CU(DevicePrimaryCtxRelease, 1, "cuDevicePrimaryCtxRelease_v2",
       "cuDevicePrimaryCtxRelease"),
    CU(CtxSetCurrent, 1, "cuCtxSetCurrent"),
    CU(CtxSynchronize, 1, "cuCtxSynchronize"),
    CU(ModuleLoadData, 1, "cuModuleLoadData"),
    CU(ModuleUnload, 1, "cuModuleUnload"),
    CU(ModuleGetFunction, 1, "cuModuleGetFunction"),
    CU(FuncGetAttribute, 1, "cuFuncGetAttribute"),
    CU(FuncSetAttribute, 1, "cuFuncSetAttribute"),
    CU(MemAlloc, 1, "cuMemAlloc_v2"),
    CU(MemFree, 1, "cuMemFree_v2"),
    CU(MemcpyHtoD, 1, "cuMemcpyHtoD_v2"),
    CU(MemcpyDtoH, 1, "cuMemcpyDtoH_v2"),
    CU(LaunchKernel, 1, "cuLaunchKernel"),
    CU(LaunchKernelEx, 0, "cuLaunchKernelEx"),
    CU(OccupancyMaxActiveBlocksPerMultiprocessor, 0,
       "cuOccupancyMaxActiveBlocksPerMultiprocessor"),
    CU(GetErrorName, 0, "cuGetErrorName"),
    CU(GetErrorString, 0, "cuGetErrorString"),
};
#undef CU

#define NV(field, req, ...) \
  { offsetof(nvrtc_api, field), req, NAMES(__VA_ARGS__) }
static const sym_spec nv_syms[] = {
    NV(GetErrorString, 1, "nvrtcGetErrorString"),
    NV(Version, 1, "nvrtcVersion"),
    NV(CreateProgram, 1, "nvrtcCreateProgram"),
    NV(DestroyProgram, 1, "nvrtcDestroyProgram"),
    NV(CompileProgram, 1, "nvrtcCompileProgram"),
    NV(GetProgramLogSize, 1, "nvrtcGetProgramLogSize"),
    NV(GetProgramLog, 1, "nvrtcGetProgramLog"),
    NV(GetPTXSize, 1, "nvrtcGetPTXSize"),
    NV(GetPTX, 1, "nvrtcGetPTX"),
    NV(GetCUBINSize, 0, "nvrtcGetCUBINSize"),
    NV(GetCUBIN, 0, "nvrtcGetCUBIN"),
    NV(GetNumSupportedArchs, 0, "nvrtcGetNumSupportedArchs"),
    NV(GetSupportedArchs, 0, "nvrtcGetSupportedArchs"),
};
#undef NV

/* "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)". */
static void cu_describe(CUresult r, char *buf, size_t n) {
  const char *name = NULL, *text = NULL;
  if (cu.GetErrorName) cu.GetErrorName(r, &name);
  if (cu.GetErrorString) cu.GetErrorString(r, &text);
  if (name && text)
    snprintf(buf, n, "%s (%s)", name, text);
  else
    snprintf(buf, n, "CUresult %d", r);
}

/* TQ_OK, or err = "<what>: <CUDA error>" and a status for the error. */
static tq_status cu_check(CUresult r, const char *what, char *err,
                          size_t errn) {
  if (r == CUDA_SUCCESS) return TQ_OK;
  char why[256];
  cu_describe(r, why, sizeof why);
  /* Using the length keeps GCC's truncation warning quiet: cutting a long
   * message short is fine. */
  if (snprintf(err, errn, "%s: %s", what, why) >= (int)errn && errn > 1)
    err[errn - 2] = '.';
  return r == CUDA_ERROR_OUT_OF_MEMORY ? TQ_ERR_NOMEM : TQ_ERR_INVALID;
}

static void cu_load_once(void) {
  cu_status = TQ_ERR_UNAVAILABLE;
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(cu_message, sizeof cu_message,
             "cuda backend unavailable: libcuda.so.1 not found (no NVIDIA "
             "driver)");
    return;
  }
  char missing[128];
  if (!bind_all(lib, &cu, cu_syms, (int)(sizeof cu_syms / sizeof *cu_syms),
                missing, sizeof missing)) {
    snprintf(cu_message, sizeof cu_message,
             "cuda backend unavailable: libcuda.so.1 is too old (%s); update "
             "the NVIDIA driver",
             missing);
    memset(&cu, 0, sizeof cu);
    dlclose(lib);
    return;
  }
  char why[256];
  CUresult r = cu.Init(0);
  if (r != CUDA_SUCCESS) {
    cu_describe(r, why, sizeof why);
    snprintf(cu_message, sizeof cu_message,
             "cuda backend unavailable: cuInit failed: %s", why);
    return;
  }
  int count = 0;
  r = cu.DeviceGetCount(&count);
  if (r != CUDA_SUCCESS || count < 1) {
    if (r != CUDA_SUCCESS)
      cu_describe(r, why, sizeof why);
    else
      snprintf(why, sizeof why, "the driver reports 0 devices");
    snprintf(cu_message, sizeof cu_message,
             "cuda backend unavailable: no CUDA device: %s", why);
    return;
  }
  cu_status = TQ_OK;
}

static tq_status cu_load(char *err, size_t errn) {
  pthread_once(&cu_once, cu_load_once);
  if (cu_status) snprintf(err, errn, "%s", cu_message);
  return cu_status;
}

/* Where NVRTC is looked for: the loader's path first, then the toolkit. */
static void *nv_open(char *tried, size_t n) {
  static const char *const sonames[] = {"libnvrtc.so", "libnvrtc.so.13",
                                        "libnvrtc.so.12"};
  const size_t k = sizeof sonames / sizeof *sonames;
  const char *home = getenv("CUDA_HOME");
  const char *dirs[] = {home && *home ? home : NULL, "/usr/local/cuda"};
  char path[1024];
  size_t used = 0;
  tried[0] = 0;
  for (int d = -1; d < 2; d++)
    for (size_t i = 0; i < k; i++) {
      if (d >= 0 && !dirs[d]) continue;
      if (d >= 0)
        snprintf(path, sizeof path, "%s/lib64/%s", dirs[d], sonames[i]);
      else
        snprintf(path, sizeof path, "%s", sonames[i]);
      void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
      if (lib) return lib;
      if (used < n)
        used += (size_t)snprintf(tried + used, n - used, "%s%s",
                                 used ? ", " : "", path);
    }
  return NULL;
}

static void nv_load_once(void) {
  char tried[768];
  nv_status = TQ_ERR_UNAVAILABLE;
  void *lib = nv_open(tried, sizeof tried);
  if (!lib) {
    snprintf(nv_message, sizeof nv_message,
             "NVRTC not found (tried %s); install the CUDA toolkit or set "
             "CUDA_HOME",
             tried);
    return;
  }
  char missing[128];
  if (!bind_all(lib, &nv, nv_syms, (int)(sizeof nv_syms / sizeof *nv_syms),
                missing, sizeof missing)) {
    snprintf(nv_message, sizeof nv_message, "NVRTC is unusable: %s", missing);
    memset(&nv, 0, sizeof nv);
    dlclose(lib);
    return;
  }
  nv.Version(&nv_major, &nv_minor);
  Dl_info info;
  void *sym;
  memcpy(&sym, &nv.Version, sizeof sym);
  snprintf(nv_message, sizeof nv_message, "NVRTC %d.%d (%s)", nv_major,
           nv_minor,
           dladdr(sym, &info) && info.dli_fname ? info.dli_fname : "?");
  nv_status = TQ_OK;
}

tq_status tq_cuda_nvrtc_available(char *err, size_t errn) {
  pthread_once(&nv_once, nv_load_once);
  snprintf(err, errn, "%s", nv_message);
  return nv_status;
}

/* Does this NVRTC compile for sm_<cc>?  Unknown (old NVRTC): assume yes. */
static int nv_supports(int cc) {
  int n = 0;
  if (!nv.GetNumSupportedArchs || !nv.GetSupportedArchs ||
      nv.GetNumSupportedArchs(&n) != NVRTC_SUCCESS || n < 1 || n > 256)
    return 1;
  int archs[256];
  if (nv.GetSupportedArchs(archs) != NVRTC_SUCCESS) return 1;
  for (int i = 0; i < n; i++)
    if (archs[i] == cc) return 1;
  return 0;
}

/* The newest arch this NVRTC knows at or below cc, or 0. */
static int nv_best_below(int cc) {
  int n = 0, best = 0, archs[256];
  if (!nv.GetNumSupportedArchs || !nv.GetSupportedArchs ||
      nv.GetNumSupportedArchs(&n) != NVRTC_SUCCESS || n < 1 || n > 256 ||
      nv.GetSupportedArchs(archs) != NVRTC_SUCCESS)
    return 0;
  for (int i = 0; i < n; i++)
    if (archs[i] <= cc && archs[i] > best) best = archs[i];
  return best;
}

/* "sm_90" -> 90, "compute_80" -> 80 (ptx = 1); 0 when malformed. */
static int parse_arch(const char *arch, int *ptx) {
  const char *digits = NULL;
  *ptx = 0;
  if (!strncmp(arch, "sm_", 3)) {
    digits = arch + 3;
  } else if (!strncmp(arch, "compute_", 8)) {
    digits = arch + 8;
    *ptx = 1;
  }
  if (!digits || !*digits || strlen(digits) > 4) return 0;
  int cc = 0;
  for (const char *p = digits; *p; p++) {
    if (*p < '0' || *p > '9') {
      /* arch-specific suffixes: sm_90a, sm_100f */
      if (p == digits || p[1]) return 0;
      break;
    }
    cc = cc * 10 + (*p - '0');
  }
  return cc;
}

/* The first error of an NVRTC log, "<prog>(LINE): error: ...", with LINE
 * mapped back to the template line it came from. */
static void explain(const tqg_source *src, const char *log, char *err,
                    size_t errn) {
  const char *line = strstr(log, ": error");
  if (!line) line = strstr(log, "error");
  if (!line) line = log;
  while (line > log && line[-1] != '\n') line--;
  const char *end = strchr(line, '\n');
  int len = end ? (int)(end - line) : (int)strlen(line);
  if (len > 600) len = 600;
  char where[300] = "";
  const char *paren = memchr(line, '(', (size_t)len);
  if (paren && paren[1] >= '0' && paren[1] <= '9') {
    int gen_line = atoi(paren + 1);
    if (gen_line > 0) tqg_source_origin(src, gen_line, where, sizeof where);
  }
  int errors = 0;
  const char *count = strstr(log, " errors detected");
  if (count) {
    while (count > log && count[-1] >= '0' && count[-1] <= '9') count--;
    errors = atoi(count);
  }
  if (!len) {
    line = "(empty compiler log)";
    len = (int)strlen(line);
  }
  snprintf(err, errn, "nvrtc: %.*s%s%s%s", len, line, *where ? " (from " : "",
           where, *where ? ")" : "");
  if (errors > 1) {
    size_t used = strlen(err);
    if (used < errn)
      snprintf(err + used, errn - used, "; %d errors in all", errors);
  }
}

static char *program_log(nvrtcProgram p) {
  size_t n = 0;
  if (nv.GetProgramLogSize(p, &n) != NVRTC_SUCCESS) n = 0;
  char *log = malloc(n + 1);
  if (!log) return NULL;
  if (n == 0 || nv.GetProgramLog(p, log) != NVRTC_SUCCESS) n = 0;
  log[n] = 0;
  return log;
}

tq_status tq_cuda_compile(const tq_variant *v, const char *arch,
                          const tqg_source *src, void **image, size_t *size,
                          char *err, size_t errn) {
  *image = NULL;
  *size = 0;
  tq_status st = tq_cuda_nvrtc_available(err, errn);
  if (st) return st;
  if (src->oom || !src->text) {
    snprintf(err, errn, "generated source is incomplete (out of memory)");
    return TQ_ERR_NOMEM;
  }
  int ptx, cc = parse_arch(arch ? arch : "", &ptx);
  if (!cc) {
    snprintf(err, errn, "arch '%s' is not sm_XY or compute_XY",
             arch ? arch : "");
    return TQ_ERR_INVALID;
  }
  if (!nv_supports(cc)) {
    snprintf(err, errn,
             "NVRTC %d.%d cannot compile for %s; use a newer CUDA toolkit",
             nv_major, nv_minor, arch);
    return TQ_ERR_UNAVAILABLE;
  }
  if (!nv.GetCUBIN || !nv.GetCUBINSize) ptx = 1; /* NVRTC before 11.1 */
  char name[220], opt_arch[48];
  if (v) {
    tqg_c_symbol(v, name, sizeof name - 3);
    strcat(name, ".cu");
  } else {
    snprintf(name, sizeof name, "kernel.cu");
  }
  snprintf(opt_arch, sizeof opt_arch, "-arch=%s%s", ptx ? "compute_" : "sm_",
           strchr(arch, '_') + 1);
  /* IEEE arithmetic (no --use_fast_math); -lineinfo for profilers;
   * --split-compile=0 runs the optimizer and ptxas on the host's threads
   * (a variant's module is five kernels: about 5.5 -> 3.4 s cold on the
   * lent H100's host, bench/RESULTS.md); where an NVRTC rejects it, the
   * compile runs again without it.  TQ_NVRTC_OPTIONS adds options (e.g.
   * -DTQ_UNROLL=4) for experiments. */
  const char *opts[16] = {opt_arch, "--std=c++17", "-lineinfo", "--split-compile=0"};
  int nopts = 4;
  char extra[256];
  const char *env = getenv("TQ_NVRTC_OPTIONS");
  snprintf(extra, sizeof extra, "%s", env ? env : "");
  for (char *o = strtok(extra, " "); o && nopts < 16; o = strtok(NULL, " "))
    opts[nopts++] = o;
  nvrtcProgram p = NULL;
  nvrtcResult r;
  for (int attempt = 0;; attempt++) {
    r = nv.CreateProgram(&p, src->text, name, 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
      snprintf(err, errn, "nvrtc: cannot create program %s: %s", name,
               nv.GetErrorString(r));
      return r == NVRTC_ERROR_OUT_OF_MEMORY ? TQ_ERR_NOMEM : TQ_ERR_INVALID;
    }
    r = nv.CompileProgram(p, nopts, opts);
    if (r != NVRTC_ERROR_INVALID_OPTION || attempt) break;
    /* Again without --split-compile (opts[3]), in a new program. */
    nv.DestroyProgram(&p);
    opts[3] = opts[--nopts];
  }
  if (r != NVRTC_SUCCESS) {
    char *log = program_log(p);
    if (r == NVRTC_ERROR_COMPILATION && log) {
      explain(src, log, err, errn);
      st = TQ_ERR_COMPILE;
    } else {
      snprintf(err, errn, "nvrtc %s: %s%s%.300s", opt_arch,
               nv.GetErrorString(r), log && *log ? ": " : "", log ? log : "");
      st =
          r == NVRTC_ERROR_INVALID_OPTION ? TQ_ERR_UNAVAILABLE : TQ_ERR_COMPILE;
    }
    free(log);
    nv.DestroyProgram(&p);
    return st;
  }
  size_t n = 0;
  r = ptx ? nv.GetPTXSize(p, &n) : nv.GetCUBINSize(p, &n);
  char *out = r == NVRTC_SUCCESS && n ? malloc(n) : NULL;
  if (out) r = ptx ? nv.GetPTX(p, out) : nv.GetCUBIN(p, out);
  nv.DestroyProgram(&p);
  if (!out || r != NVRTC_SUCCESS) {
    free(out);
    snprintf(
        err, errn, "nvrtc: no %s produced for %s: %s", ptx ? "PTX" : "CUBIN",
        name,
        r != NVRTC_SUCCESS ? nv.GetErrorString(r) : "empty or out of memory");
    return out || r != NVRTC_SUCCESS ? TQ_ERR_COMPILE : TQ_ERR_NOMEM;
  }
  *image = out;
  *size = n;
  return TQ_OK;
}

/* ---- The backend ------------------------------------------------------ */
typedef struct cuda_state {
  int ordinal;
  CUdevice dev;
  CUcontext ctx;
  int major, minor;
  int shared_optin; /* most dynamic shared memory a block may opt into */
  int sm_count;     /* multiprocessors; 0 when the driver would not say */
  char arch[24];    /* what compile targets: sm_XY, or compute_XY for the
                       driver to finish when NVRTC predates the device */
  char name[128];
  char target[48]; /* cache target with an options tag */
} cuda_state;

typedef struct cuda_module {
  CUmodule mod;
  tq_variant variant; /* the launch plan needs it */
  int n_fn;
  CUfunction fn[CUDA_MAX_ENTRIES];
  /* Static shared bytes of each kernel, and the dynamic shared bytes it may
   * take now: 48 KiB minus the static part until raised at a launch. */
  int static_shared[CUDA_MAX_ENTRIES];
  int max_dynamic[CUDA_MAX_ENTRIES];
  /* Blocks of each op's first kernel the device runs at once; 0 until
   * asked (op_slots), -1 when the driver could not say. */
  int slots[TQ_OP_COUNT];
} cuda_module;

static int n_entries(void) {
  int n = 0;
  while (tq_cuda_entries[n] && n < CUDA_MAX_ENTRIES) n++;
  return n;
}

static int entry_index(const char *entry) {
  for (int i = 0; entry && tq_cuda_entries[i] && i < CUDA_MAX_ENTRIES; i++)
    if (!strcmp(tq_cuda_entries[i], entry)) return i;
  return -1;
}

/* Driver calls act on the calling thread's current context. */
static tq_status bind_ctx(cuda_state *s, char *err, size_t errn) {
  return cu_check(cu.CtxSetCurrent(s->ctx), "cuCtxSetCurrent", err, errn);
}

static tq_status cuda_probe(char *err, size_t errn) {
  return cu_load(err, errn);
}

static tq_status cuda_open(void **state, char *err, size_t errn) {
  *state = NULL;
  tq_status st = cu_load(err, errn);
  if (st) return st;
  int count = 0, ordinal = 0;
  const char *env = getenv("TQ_CUDA_DEVICE");
  if ((st = cu_check(cu.DeviceGetCount(&count), "cuDeviceGetCount", err, errn)))
    return st;
  if (env && *env) {
    char *end;
    long d = strtol(env, &end, 10);
    if (*end || d < 0 || d >= count) {
      snprintf(err, errn,
               "TQ_CUDA_DEVICE='%s': this machine has %d CUDA device(s), "
               "numbered 0..%d",
               env, count, count - 1);
      return TQ_ERR_INVALID;
    }
    ordinal = (int)d;
  }
  cuda_state *s = calloc(1, sizeof *s);
  if (!s) return TQ_ERR_NOMEM;
  s->ordinal = ordinal;
  char what[64];
  snprintf(what, sizeof what, "device %d", ordinal);
  st = cu_check(cu.DeviceGet(&s->dev, ordinal), what, err, errn);
  if (!st)
    st = cu_check(
        cu.DeviceGetAttribute(
            &s->major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, s->dev),
        "compute capability", err, errn);
  if (!st)
    st = cu_check(
        cu.DeviceGetAttribute(
            &s->minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, s->dev),
        "compute capability", err, errn);
  if (!st && cu.DeviceGetAttribute(
                 &s->shared_optin,
                 CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                 s->dev) != CUDA_SUCCESS)
    s->shared_optin = CUDA_DEFAULT_SHARED_LIMIT;
  if (!st && cu.DeviceGetAttribute(&s->sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                                   s->dev) != CUDA_SUCCESS)
    s->sm_count = 0;
  if (!st &&
      cu.DeviceGetName(s->name, (int)sizeof s->name, s->dev) != CUDA_SUCCESS)
    snprintf(s->name, sizeof s->name, "CUDA device %d", ordinal);
  if (!st) {
    snprintf(what, sizeof what, "primary context of device %d", ordinal);
    st = cu_check(cu.DevicePrimaryCtxRetain(&s->ctx, s->dev), what, err, errn);
    if (st) s->ctx = NULL;
  }
  if (!st) st = bind_ctx(s, err, errn);
  if (st) {
    if (s->ctx) cu.DevicePrimaryCtxRelease(s->dev);
    free(s);
    return st;
  }
  snprintf(s->arch, sizeof s->arch, "sm_%d%d", s->major, s->minor);
  *state = s;
  return TQ_OK;
}

/* The cache target: the arch, and a tag of TQ_NVRTC_OPTIONS when set so
 * experiments never load each other's binaries. */
static const char *cuda_target(void *state) {
  cuda_state *s = state;
  const char *env = getenv("TQ_NVRTC_OPTIONS");
  if (!env || !*env) return s->arch;
  unsigned long long h = 1469598103934665603ull; /* FNV-1a */
  for (const char *c = env; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
  snprintf(s->target, sizeof s->target, "%s-x%08llx", s->arch, h & 0xffffffffull);
  return s->target;
}

static void cuda_close(void *state) {
  cuda_state *s = state;
  if (!s) return;
  cu.DevicePrimaryCtxRelease(s->dev);
  free(s);
}

static tq_status cuda_emit(const tq_variant *v, tqg_source *out, char *err,
                           size_t errn) {
  return tqg_emit_cuda(v, "jit", out, err, errn);
}

static tq_status cuda_compile(void *state, const tq_variant *v,
                              const tqg_source *src, void **binary,
                              size_t *size, char *err, size_t errn) {
  cuda_state *s = state;
  tq_status st = tq_cuda_nvrtc_available(err, errn);
  if (st) return st;
  char arch[24];
  int cc = s->major * 10 + s->minor;
  snprintf(arch, sizeof arch, "%s", s->arch);
  if (!nv_supports(cc)) {
    /* NVRTC older than the GPU: PTX for the newest arch it knows, which
     * the driver compiles for the device when loading. */
    int best = nv_best_below(cc);
    if (!best) {
      snprintf(err, errn, "NVRTC %d.%d cannot compile for %s (%s)", nv_major,
               nv_minor, s->arch, s->name);
      return TQ_ERR_UNAVAILABLE;
    }
    snprintf(arch, sizeof arch, "compute_%d", best);
  }
  return tq_cuda_compile(v, arch, src, binary, size, err, errn);
}

/* Looks up every entry of tq_cuda_entries in the loaded module; names[i]
 * overrides the derived "<symbol>_<entry>" when not NULL. */
static tq_status bind_functions(cuda_module *m, const char *const *names,
                                char *err, size_t errn) {
  char sym[200], fn[260];
  tqg_c_symbol(&m->variant, sym, sizeof sym);
  m->n_fn = n_entries();
  for (int i = 0; i < m->n_fn; i++) {
    if (names && names[i])
      snprintf(fn, sizeof fn, "%s", names[i]);
    else
      snprintf(fn, sizeof fn, "%s_%s", sym, tq_cuda_entries[i]);
    CUresult r = cu.ModuleGetFunction(&m->fn[i], m->mod, fn);
    if (r != CUDA_SUCCESS) {
      char why[256];
      cu_describe(r, why, sizeof why);
      snprintf(err, errn, "kernel %s missing from the module: %s", fn, why);
      return TQ_ERR_COMPILE;
    }
    tq_status st = cu_check(
        cu.FuncGetAttribute(&m->static_shared[i],
                            CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, m->fn[i]),
        fn, err, errn);
    if (!st)
      st = cu_check(
          cu.FuncGetAttribute(&m->max_dynamic[i],
                              CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                              m->fn[i]),
          fn, err, errn);
    if (st) return st;
  }
  return TQ_OK;
}

static tq_status load_image(cuda_state *s, const tq_variant *v,
                            const void *image, const char *const *names,
                            void **module, char *err, size_t errn) {
  *module = NULL;
  tq_status st = bind_ctx(s, err, errn);
  if (st) return st;
  cuda_module *m = calloc(1, sizeof *m);
  if (!m) return TQ_ERR_NOMEM;
  m->variant = *v;
  CUresult r = cu.ModuleLoadData(&m->mod, image);
  if (r != CUDA_SUCCESS) {
    char what[200];
    snprintf(what, sizeof what, "cuModuleLoadData on %s (%s)", s->arch,
             s->name);
    cu_check(r, what, err, errn);
    free(m);
    return TQ_ERR_COMPILE;
  }
  if ((st = bind_functions(m, names, err, errn))) {
    cu.ModuleUnload(m->mod);
    free(m);
    return st;
  }
  *module = m;
  return TQ_OK;
}

static tq_status cuda_load(void *state, const tq_variant *v, const void *binary,
                           size_t size, void **module, char *err, size_t errn) {
  if (!binary || !size) {
    snprintf(err, errn, "empty module image");
    return TQ_ERR_INVALID;
  }
  return load_image(state, v, binary, NULL, module, err, errn);
}

static tq_status cuda_load_aot(void *state, const tq_dispatch_entry *e,
                               void **module, char *err, size_t errn) {
  if (!e->binary || !e->binary_size) {
    snprintf(err, errn, "dispatch entry %s has no module image", e->name);
    return TQ_ERR_INVALID;
  }
  /* Entry names the table gives for an op override the derived ones. */
  const char *names[CUDA_MAX_ENTRIES] = {0};
  for (int i = 0; i < n_entries(); i++) {
    tq_op op = tqg_op_parse(tq_cuda_entries[i]);
    if (op < TQ_OP_COUNT) names[i] = e->entry[op];
  }
  /* A fatbin embedded as a char array may sit at any address; the driver
   * wants its images aligned. */
  const void *image = e->binary;
  void *copy = NULL;
  if ((uintptr_t)image % 16) {
    copy = aligned_alloc(16, (e->binary_size + 15) & ~(size_t)15);
    if (!copy) return TQ_ERR_NOMEM;
    memcpy(copy, e->binary, e->binary_size);
    image = copy;
  }
  tq_status st =
      load_image(state, &e->variant, image, names, module, err, errn);
  free(copy);
  return st;
}

static void cuda_unload(void *state, void *module) {
  cuda_module *m = module;
  if (!m) return;
  char err[512];
  if (!bind_ctx(state, err, sizeof err)) cu.ModuleUnload(m->mod);
  free(m);
}

static CUdeviceptr dptr(const void *mem) {
  return (CUdeviceptr)(uintptr_t)mem;
}

static tq_status cuda_alloc(void *state, size_t bytes, void **mem, char *err,
                            size_t errn) {
  *mem = NULL;
  tq_status st = bind_ctx(state, err, errn);
  if (st) return st;
  CUdeviceptr p = 0;
  char what[64];
  snprintf(what, sizeof what, "cuMemAlloc(%zu)", bytes);
  st = cu_check(cu.MemAlloc(&p, bytes ? bytes : CUDA_MIN_ALLOC), what, err,
                errn);
  if (!st) *mem = (void *)(uintptr_t)p;
  return st;
}

static void cuda_free(void *state, void *mem) {
  char err[512];
  if (mem && !bind_ctx(state, err, sizeof err)) cu.MemFree(dptr(mem));
}

static tq_status cuda_write(void *state, void *mem, size_t off, const void *src,
                            size_t n, char *err, size_t errn) {
  if (!n) return TQ_OK;
  tq_status st = bind_ctx(state, err, errn);
  return st ? st
            : cu_check(cu.MemcpyHtoD(dptr(mem) + off, src, n), "cuMemcpyHtoD",
                       err, errn);
}

static tq_status cuda_read(void *state, const void *mem, size_t off, void *dst,
                           size_t n, char *err, size_t errn) {
  if (!n) return TQ_OK;
  tq_status st = bind_ctx(state, err, errn);
  return st ? st
            : cu_check(cu.MemcpyDtoH(dst, dptr(mem) + off, n), "cuMemcpyDtoH",
                       err, errn);
}

static void *cuda_host_ptr(void *state, void *mem) {
  (void)state;
  (void)mem;
  return NULL; /* device memory */
}

/* How many blocks of op's first kernel the device runs at once: the plan
 * sizes the decode's context splits (and with them the workspace) and the
 * tensor-core encode's grid by it.  Asked of the driver once per module
 * and op (which kernel and block an op's first step uses depends on the
 * variant alone); 0 (the plan's default) when the driver cannot say. */
static int op_slots(cuda_state *s, cuda_module *m, tq_op op, const tq_kargs *a) {
  if ((unsigned)op >= TQ_OP_COUNT) return 0;
  if (!m->slots[op]) {
    tq_cuda_step steps[TQ_CUDA_MAX_STEPS];
    const int n = tq_cuda_plan(&m->variant, op, a, s->shared_optin, 0, steps);
    if (n < 1) return 0; /* unusable arguments: ask again with usable ones */
    const int e = entry_index(steps[0].entry);
    const tq_cuda_step *t = &steps[0];
    int per_sm = 0;
    char err[64];
    m->slots[op] = -1;
    if (e >= 0 && e < m->n_fn && s->sm_count > 0 && cu.OccupancyMaxActiveBlocksPerMultiprocessor &&
        !bind_ctx(s, err, sizeof err) &&
        cu.OccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, m->fn[e], (int)(t->block[0] * t->block[1] * t->block[2]),
            t->shared_bytes) == CUDA_SUCCESS)
      m->slots[op] = (per_sm > 0 ? per_sm : 1) * s->sm_count;
  }
  return m->slots[op] > 0 ? m->slots[op] : 0;
}

static size_t cuda_workspace(void *state, void *module, tq_op op,
                             const tq_kargs *a) {
  cuda_module *m = module;
  return tq_cuda_workspace(&m->variant, op, a, op_slots(state, m, op, a));
}

static tq_status cuda_launch(void *state, void *module, tq_op op,
                             const tq_kargs *a, char *err, size_t errn) {
  cuda_state *s = state;
  cuda_module *m = module;
  const int slots = op_slots(s, m, op, a);
  size_t need = tq_cuda_workspace(&m->variant, op, a, slots);
  if (need > a->workspace_bytes || (need && !a->workspace)) {
    snprintf(err, errn,
             "needs %zu bytes of workspace, got %zu: pass a workspace buffer "
             "of tq_workspace_size() bytes",
             need, a->workspace ? a->workspace_bytes : 0);
    return TQ_ERR_INVALID;
  }
  tq_cuda_step steps[TQ_CUDA_MAX_STEPS];
  int n = tq_cuda_plan(&m->variant, op, a, s->shared_optin, slots, steps);
  if (n < 1 || n > TQ_CUDA_MAX_STEPS) {
    snprintf(err, errn, "no launch plan for batch %d, kv_heads %d, n_tokens %d",
             a->batch, a->kv_heads, a->n_tokens);
    return TQ_ERR_INVALID;
  }
  tq_status st = bind_ctx(s, err, errn);
  if (st) return st;
  /* The kernels read the plan's split count from their arguments. */
  tq_kargs args = *a;
  args.splits = tq_cuda_splits(&m->variant, op, a, slots);
  for (int i = 0; i < n; i++) {
    const tq_cuda_step *t = &steps[i];
    int e = entry_index(t->entry);
    if (e < 0 || e >= m->n_fn) {
      snprintf(err, errn, "the plan names kernel '%s', which the module lacks",
               t->entry ? t->entry : "(null)");
      return TQ_ERR_INVALID;
    }
    /* Past 48 KiB of static + dynamic shared memory a kernel must opt in,
     * up to what the device allows. */
    if ((long)t->shared_bytes > m->max_dynamic[e]) {
      long total = (long)m->static_shared[e] + (long)t->shared_bytes;
      if (total > s->shared_optin) {
        snprintf(err, errn,
                 "%s needs %ld bytes of shared memory (%d static + %u "
                 "dynamic); %s allows %d per block",
                 t->entry, total, m->static_shared[e], t->shared_bytes, s->name,
                 s->shared_optin);
        return TQ_ERR_INVALID;
      }
      if ((st = cu_check(
               cu.FuncSetAttribute(
                   m->fn[e], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                   (int)t->shared_bytes),
               "cuFuncSetAttribute(max dynamic shared)", err, errn)))
        return st;
      m->max_dynamic[e] = (int)t->shared_bytes;
    }
    /* The one parameter, tq_kargs by value: the driver copies it at launch. */
    void *params[] = {&args};
    CUresult r;
    if (i > 0 && s->major >= 9 && cu.LaunchKernelEx) {
      /* A later step (the reduce) may launch while the one before ends:
       * it waits for that grid's results itself (griddepcontrol). */
      cu_launch_attribute overlap;
      memset(&overlap, 0, sizeof overlap);
      overlap.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
      overlap.value.programmatic_stream_serialization_allowed = 1;
      cu_launch_config c = {t->grid[0], t->grid[1], t->grid[2], t->block[0], t->block[1],
                            t->block[2], t->shared_bytes, NULL, &overlap, 1};
      r = cu.LaunchKernelEx(&c, m->fn[e], params, NULL);
    } else {
      r = cu.LaunchKernel(m->fn[e], t->grid[0], t->grid[1], t->grid[2], t->block[0],
                          t->block[1], t->block[2], t->shared_bytes, NULL, params, NULL);
    }
    if (r != CUDA_SUCCESS) {
      char what[160];
      snprintf(what, sizeof what,
               "cuLaunchKernel %s grid (%u,%u,%u) block (%u,%u,%u) shared %u",
               t->entry, t->grid[0], t->grid[1], t->grid[2], t->block[0],
               t->block[1], t->block[2], t->shared_bytes);
      return cu_check(r, what, err, errn);
    }
  }
  return TQ_OK;
}

static tq_status cuda_sync(void *state, char *err, size_t errn) {
  tq_status st = bind_ctx(state, err, errn);
  if (st) return st;
  CUresult r = cu.CtxSynchronize();
  if (r == CUDA_SUCCESS) return TQ_OK;
  /* Faults of kernels launched since the last sync surface here; after an
   * illegal address the context stays unusable. */
  cu_check(r, "cuCtxSynchronize", err, errn);
  return TQ_ERR_INVALID;
}

const tq_backend_ops tq_backend_cuda = {
    .name = "cuda",
    .binary_kind = "cubin",
    .target = cuda_target,
    .probe = cuda_probe,
    .open = cuda_open,
    .close = cuda_close,
    .emit = cuda_emit,
    .compile = cuda_compile,
    .load = cuda_load,
    .load_aot = cuda_load_aot,
    .unload = cuda_unload,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .write = cuda_write,
    .read = cuda_read,
    .host_ptr = cuda_host_ptr,
    .workspace = cuda_workspace,
    .launch = cuda_launch,
    .sync = cuda_sync,
};
