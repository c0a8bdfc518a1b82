/* wgsl.c - the WebGPU backend: WGSL kernels run through a native WebGPU
 * implementation (wgpu-native) loaded with dlopen, so the runtime builds
 * and runs without it; probe then says what is missing.
 *
 * The library is found at TQ_WGPU_LIBRARY (environment), else at the path
 * the build found (scripts/setup.sh unpacks the pinned `wgpu` wheel into
 * <build>/wgpu).  The code follows exactly the webgpu.h/wgpu.h of that wheel
 * (the callback-info generation of webgpu.h), included at build time.
 *
 * JIT: generated WGSL (one module per variant, all entry points) is
 * compiled once by the implementation to validate it (errors name the
 * generated line and the template line), cached as text and turned into
 * pipelines on load.  AOT: the dispatch entry's shaders.  Buffers are
 * WGPUBuffer handles (tq_buffer_ptr gives one); scalars travel in a uniform
 * buffer per launch (core WebGPU has no push constants).  A launch whose
 * buffers pass the device's largest storage binding runs in parts that
 * bind windows of them (wgsl_plan.h).
 *
 * Decode and prefill of the variants tqg_wgsl_fast accepts run the f16sg
 * module's attend_fast entry where the device's subgroups have a size it
 * serves (8, 16 or 32); the entry's own probe mode confirms the size and
 * layout before a module uses it, else the attend entry with subgroups
 * runs and tq_kernel_path says why. */
#define _GNU_SOURCE
#include "wgsl.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "core.h"
#include "emit.h"
#include "wgsl_plan.h"

#ifndef TQ_WGPU_LIBRARY_PATH
#define TQ_WGPU_LIBRARY_PATH "libwgpu_native.so"
#endif

#ifndef TQ_HAVE_WEBGPU_H
/* ---- Built without the headers: the backend says so ------------------ */
static tq_status wg_probe(char *err, size_t errn) {
  snprintf(err, errn,
           "wgsl backend unavailable: this runtime was built without the "
           "WebGPU headers (scripts/setup.sh unpacks them into <build>/wgpu; "
           "or set TQ_WGPU_DIR when configuring)");
  return TQ_ERR_UNAVAILABLE;
}
static tq_status wg_open(void **state, char *err, size_t errn) {
  *state = NULL;
  return wg_probe(err, errn);
}
static void wg_close(void *state) {
  (void)state;
}
static tq_status wg_emit(const tq_variant *v, tqg_source *out, char *err,
                         size_t errn) {
  return tqg_emit_wgsl(v, TQG_WGSL_CORE, "jit", out, err, errn);
}
tq_status tq_wgsl_validator_open(tq_wgsl_validator **out, char *err,
                                 size_t errn) {
  *out = NULL;
  return wg_probe(err, errn);
}
void tq_wgsl_validator_close(tq_wgsl_validator *val) {
  (void)val;
}
int tq_wgsl_validator_has(const tq_wgsl_validator *val, tqg_wgsl_flavour f) {
  (void)val;
  (void)f;
  return 0;
}
tq_status tq_wgsl_validate(tq_wgsl_validator *val, const tq_variant *v,
                           tqg_wgsl_flavour f, const tqg_source *src, char *err,
                           size_t errn) {
  (void)val;
  (void)v;
  (void)f;
  (void)src;
  return wg_probe(err, errn);
}
const tq_backend_ops tq_backend_wgsl = {.name = "wgsl",
                                        .binary_kind = "wgsl",
                                        .probe = wg_probe,
                                        .open = wg_open,
                                        .close = wg_close,
                                        .emit = wg_emit};
#else

#include "webgpu.h"
#include "wgpu.h"

/* ---- The API: the functions used here, bound with dlsym -------------- */
typedef WGPUBool (*wg_poll_fn)(WGPUDevice, WGPUBool,
                               WGPUSubmissionIndex const *);
typedef uint32_t (*wg_version_fn)(void);
typedef WGPUShaderModule (*wg_trusted_fn)(WGPUDevice,
                                          WGPUShaderModuleDescriptor const *,
                                          WGPUShaderRuntimeChecks);

#define WG_FUNCTIONS(X)                                                           \
  X(CreateInstance)                                                               \
  X(InstanceRequestAdapter)                                                       \
  X(InstanceProcessEvents) X(InstanceRelease) X(AdapterRequestDevice) X(          \
      AdapterHasFeature) X(AdapterGetLimits) X(AdapterGetInfo)                    \
      X(AdapterInfoFreeMembers) X(AdapterRelease) X(DeviceGetQueue) X(            \
          DeviceRelease) X(DeviceCreateBuffer) X(DevicePushErrorScope)            \
          X(DevicePopErrorScope) X(DeviceCreateShaderModule) X(                   \
              DeviceCreateBindGroupLayout) X(DeviceCreatePipelineLayout)          \
              X(DeviceCreateComputePipeline) X(DeviceCreateBindGroup) X(          \
                  DeviceCreateCommandEncoder) X(ShaderModuleRelease)              \
                  X(BindGroupLayoutRelease) X(PipelineLayoutRelease) X(           \
                      ComputePipelineRelease) X(BindGroupRelease)                 \
                      X(BufferRelease) X(BufferDestroy) X(BufferGetSize) X(       \
                          BufferMapAsync) X(BufferAddRef)                         \
                          X(BufferGetConstMappedRange) X(BufferUnmap) X(          \
                              QueueWriteBuffer) X(QueueSubmit) X(QueueRelease)    \
                              X(CommandEncoderBeginComputePass) X(                \
                                  CommandEncoderCopyBufferToBuffer)               \
                                  X(CommandEncoderFinish) X(                      \
                                      CommandEncoderRelease)                      \
                                      X(ComputePassEncoderSetPipeline) X(         \
                                          ComputePassEncoderSetBindGroup)         \
                                          X(ComputePassEncoderDispatchWorkgroups) \
                                              X(ComputePassEncoderEnd)            \
                                                  X(ComputePassEncoderRelease)    \
                                                      X(CommandBufferRelease)

typedef struct wg_api {
#define FIELD(f) WGPUProc##f f;
  WG_FUNCTIONS(FIELD)
#undef FIELD
  wg_poll_fn DevicePoll;
  wg_version_fn GetVersion;
  wg_trusted_fn DeviceCreateShaderModuleTrusted; /* optional: NULL if absent */
} wg_api;

/* Loaded once per process and never unloaded; read-only afterwards. */
static wg_api wg;
static tq_status wg_status;
static char wg_message[768];
static char wg_path[512];
static pthread_once_t wg_once = PTHREAD_ONCE_INIT;

static int bind_sym(void *lib, void *fp, const char *name) {
  void *p = dlsym(lib, name);
  if (p) memcpy(fp, &p, sizeof p);
  return p != NULL;
}

static void wg_load_once(void) {
  const char *env = getenv("TQ_WGPU_LIBRARY");
  snprintf(wg_path, sizeof wg_path, "%s",
           env && *env ? env : TQ_WGPU_LIBRARY_PATH);
  wg_status = TQ_ERR_UNAVAILABLE;
  void *lib = dlopen(wg_path, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(
        wg_message, sizeof wg_message,
        "wgsl backend unavailable: cannot load the WebGPU library %s (%s); "
        "run scripts/setup.sh or set TQ_WGPU_LIBRARY",
        wg_path, dlerror());
    return;
  }
  int ok = 1;
  const char *missing = "";
#define BIND(f) \
  if (ok && !bind_sym(lib, &wg.f, "wgpu" #f)) ok = 0, missing = "wgpu" #f;
  WG_FUNCTIONS(BIND)
  BIND(DevicePoll)
  BIND(GetVersion)
#undef BIND
  bind_sym(lib, &wg.DeviceCreateShaderModuleTrusted,
           "wgpuDeviceCreateShaderModuleTrusted");
  if (!ok) {
    snprintf(wg_message, sizeof wg_message,
             "wgsl backend unavailable: %s lacks %s (not the wgpu-native "
             "release this build's webgpu.h came from)",
             wg_path, missing);
    memset(&wg, 0, sizeof wg);
    dlclose(lib);
    return;
  }
  wg_status = TQ_OK;
}

static tq_status wg_load(char *err, size_t errn) {
  pthread_once(&wg_once, wg_load_once);
  if (wg_status) snprintf(err, errn, "%s", wg_message);
  return wg_status;
}

static WGPUStringView sv(const char *s) {
  WGPUStringView v = {s, s ? strlen(s) : 0};
  return v;
}

/* ---- state --------------------------------------------------------------- */
/* A bind group kept for reuse: the launch-time cost of creating one is
 * paid once per set of buffers and windows of them.  It holds a reference
 * on each buffer, so no handle it names can be freed and reused for
 * another buffer while it is kept. */
typedef struct wg_group {
  WGPUBindGroupLayout layout; /* NULL: a free entry */
  WGPUBuffer buf[TQG_WB_COUNT];
  uint64_t offset[TQG_WB_COUNT], size[TQG_WB_COUNT]; /* size 0: whole */
  WGPUBindGroup group;
} wg_group;
#define WG_GROUPS 16

typedef struct wg_state {
  WGPUInstance instance;
  WGPUAdapter adapter;
  WGPUDevice device;
  WGPUQueue queue;
  tqg_wgsl_flavour flavour;
  WGPUBuffer dummy; /* bound where a launch passes no block table / perm */
  char name[256];
  /* Errors nobody captured (a fault after submission) and device loss. */
  char uncaptured[1024];
  int lost;
  /* The device's largest storage binding (TQ_WGSL_MAX_BINDING may lower
   * it): a launch larger runs in parts (wgsl_plan.h), and checks the
   * buffers it binds whole against it, since wgpu-native treats an
   * invalid submission as fatal. */
  uint64_t max_binding;
  /* Shader modules without wgpu's runtime checks (shader_module says why
   * that is safe); TQ_WGSL_RUNTIME_CHECKS=1 keeps them. */
  int trusted;
  /* attend_fast: the subgroup size to build it for (the adapter's fixed
   * size, else 32, corrected by the first probe), or 0 with fast_why
   * saying why it does not run here. */
  int fast_sg;
  char fast_why[96];
  /* The uniform block of every launch, rewritten on the queue before each
   * submission (queue order makes each dispatch see its own values). */
  WGPUBuffer params;
  wg_group groups[WG_GROUPS];
  unsigned next_group;
} wg_state;

typedef struct wg_module {
  tq_variant variant;
  WGPUShaderModule shader;
  WGPUBindGroupLayout bgl[TQG_WGSL_STAGES]; /* NULL: no such entry point */
  WGPUComputePipeline pipe[TQG_WGSL_STAGES];
  WGPUBuffer tables;
  char attend_path[192]; /* what tq_kernel_path says of decode and prefill */
} wg_module;

/* Callback results land here; the waiting loop spins ProcessEvents. */
typedef struct wg_wait {
  int done;
  int status;
  void *object;
  char message[1536];
} wg_wait;

static void copy_message(wg_wait *w, WGPUStringView m) {
  size_t n = m.data ? (m.length == WGPU_STRLEN ? strlen(m.data) : m.length) : 0;
  if (n >= sizeof w->message) n = sizeof w->message - 1;
  if (n) memcpy(w->message, m.data, n);
  w->message[n] = 0;
}

static void on_adapter(WGPURequestAdapterStatus st, WGPUAdapter a,
                       WGPUStringView m, void *u1, void *u2) {
  (void)u2;
  wg_wait *w = u1;
  w->status = (int)st;
  w->object = a;
  copy_message(w, m);
  w->done = 1;
}

static void on_device(WGPURequestDeviceStatus st, WGPUDevice d,
                      WGPUStringView m, void *u1, void *u2) {
  (void)u2;
  wg_wait *w = u1;
  w->status = (int)st;
  w->object = d;
  copy_message(w, m);
  w->done = 1;
}

static void on_scope(WGPUPopErrorScopeStatus st, WGPUErrorType type,
                     WGPUStringView m, void *u1, void *u2) {
  (void)u2;
  wg_wait *w = u1;
  w->status = st == WGPUPopErrorScopeStatus_Success ? (int)type : -1;
  copy_message(w, m);
  w->done = 1;
}

static void on_map(WGPUMapAsyncStatus st, WGPUStringView m, void *u1,
                   void *u2) {
  (void)u2;
  wg_wait *w = u1;
  w->status = (int)st;
  copy_message(w, m);
  w->done = 1;
}

static void on_uncaptured(WGPUDevice const *d, WGPUErrorType type,
                          WGPUStringView m, void *u1, void *u2) {
  (void)d;
  (void)type;
  (void)u2;
  wg_state *s = u1;
  if (s->uncaptured[0]) return; /* keep the first */
  size_t n = m.data ? (m.length == WGPU_STRLEN ? strlen(m.data) : m.length) : 0;
  if (n >= sizeof s->uncaptured) n = sizeof s->uncaptured - 1;
  memcpy(s->uncaptured, m.data ? m.data : "", n);
  s->uncaptured[n] = 0;
}

static void on_lost(WGPUDevice const *d, WGPUDeviceLostReason r,
                    WGPUStringView m, void *u1, void *u2) {
  (void)d;
  (void)m;
  (void)u2;
  wg_state *s = u1;
  if (r != WGPUDeviceLostReason_Destroyed &&
      r != WGPUDeviceLostReason_CallbackCancelled)
    s->lost = 1;
}

static void wait_for(WGPUInstance inst, wg_wait *w) {
  for (int i = 0; !w->done && i < 1000000; i++) wg.InstanceProcessEvents(inst);
}

static void push_scopes(wg_state *s) {
  wg.DevicePushErrorScope(s->device, WGPUErrorFilter_OutOfMemory);
  wg.DevicePushErrorScope(s->device, WGPUErrorFilter_Validation);
}

/* Pops the two scopes of push_scopes; TQ_OK, or the first error in msg. */
static tq_status pop_scopes(wg_state *s, char *msg, size_t n) {
  tq_status st = TQ_OK;
  for (int i = 0; i < 2; i++) {
    wg_wait w = {0};
    WGPUPopErrorScopeCallbackInfo cb = WGPU_POP_ERROR_SCOPE_CALLBACK_INFO_INIT;
    cb.mode = WGPUCallbackMode_AllowProcessEvents;
    cb.callback = on_scope;
    cb.userdata1 = &w;
    wg.DevicePopErrorScope(s->device, cb);
    wait_for(s->instance, &w);
    if (!st && w.done && w.status > (int)WGPUErrorType_NoError) {
      snprintf(msg, n, "%s", w.message);
      st = i == 0 ? TQ_ERR_COMPILE : TQ_ERR_NOMEM; /* validation, then OOM */
    }
  }
  return st;
}

/* ---- probe, open, close ---------------------------------------------- */
static WGPUInstance new_instance(void) {
  WGPUInstanceExtras extras = {0};
  extras.chain.sType = (WGPUSType)WGPUSType_InstanceExtras;
  extras.backends = WGPUInstanceBackend_Primary;
  WGPUInstanceDescriptor d = WGPU_INSTANCE_DESCRIPTOR_INIT;
  d.nextInChain = &extras.chain;
  return wg.CreateInstance(&d);
}

static WGPUAdapter get_adapter(WGPUInstance inst, char *err, size_t errn) {
  wg_wait w = {0};
  WGPURequestAdapterOptions o = WGPU_REQUEST_ADAPTER_OPTIONS_INIT;
  o.powerPreference = WGPUPowerPreference_HighPerformance;
  WGPURequestAdapterCallbackInfo cb = WGPU_REQUEST_ADAPTER_CALLBACK_INFO_INIT;
  cb.mode = WGPUCallbackMode_AllowProcessEvents;
  cb.callback = on_adapter;
  cb.userdata1 = &w;
  wg.InstanceRequestAdapter(inst, &o, cb);
  wait_for(inst, &w);
  if (!w.object)
    snprintf(err, errn,
             "wgsl backend unavailable: no WebGPU adapter (%s); on a machine "
             "without a GPU install mesa-vulkan-drivers (lavapipe)",
             w.message[0] ? w.message : "none found");
  return w.object;
}

static tq_status wg_probe(char *err, size_t errn) {
  return wg_load(err, errn);
}

static int has_subgroups(WGPUAdapter a) {
  return wg.AdapterHasFeature(a, WGPUFeatureName_Subgroups) ||
         wg.AdapterHasFeature(a, (WGPUFeatureName)WGPUNativeFeature_Subgroup);
}

static void drop_group(wg_group *g) {
  if (!g->layout) return;
  wg.BindGroupRelease(g->group);
  for (int b = 0; b < TQG_WB_COUNT; b++)
    if (g->buf[b]) wg.BufferRelease(g->buf[b]);
  memset(g, 0, sizeof *g);
}

static void wg_close(void *state) {
  wg_state *s = state;
  if (!s) return;
  for (int i = 0; i < WG_GROUPS; i++) drop_group(&s->groups[i]);
  if (s->params) wg.BufferRelease(s->params);
  if (s->dummy) wg.BufferRelease(s->dummy);
  if (s->queue) wg.QueueRelease(s->queue);
  if (s->device) wg.DeviceRelease(s->device);
  if (s->adapter) wg.AdapterRelease(s->adapter);
  if (s->instance) wg.InstanceRelease(s->instance);
  free(s);
}

/* Flavour: TQ_WGSL_FLAVOUR=core|f16sg|auto (auto: f16sg when the adapter
 * has shader-f16 and subgroups). */
static tq_status choose_flavour(wg_state *s, int best, char *err, size_t errn) {
  const char *env = best ? NULL : getenv("TQ_WGSL_FLAVOUR");
  int can = wg.AdapterHasFeature(s->adapter, WGPUFeatureName_ShaderF16) &&
            has_subgroups(s->adapter);
  if (!env || !*env || !strcmp(env, "auto")) {
    s->flavour = can ? TQG_WGSL_F16SG : TQG_WGSL_CORE;
    return TQ_OK;
  }
  s->flavour = tqg_wgsl_flavour_parse(env);
  if (s->flavour == TQG_WGSL_FLAVOURS) {
    snprintf(err, errn, "TQ_WGSL_FLAVOUR='%s': allowed core, f16sg, auto", env);
    return TQ_ERR_INVALID;
  }
  if (s->flavour == TQG_WGSL_F16SG && !can) {
    snprintf(err, errn, "wgsl backend: TQ_WGSL_FLAVOUR=f16sg but %s lacks %s",
             s->name,
             wg.AdapterHasFeature(s->adapter, WGPUFeatureName_ShaderF16)
                 ? "subgroups"
                 : "shader-f16");
    return TQ_ERR_UNAVAILABLE;
  }
  return TQ_OK;
}

/* attend_fast's subgroup size: the adapter's when it reports one fixed
 * size; when it reports none (wgpu-native 29 leaves AdapterInfo's sizes at
 * 0) 32, the size of NVIDIA's and Apple's GPUs, which the first module's
 * probe corrects (fast_stage).  TQ_WGSL_FAST=0 turns the entry off. */
static void choose_fast(wg_state *s, uint32_t lo, uint32_t hi) {
  const char *env = getenv("TQ_WGSL_FAST");
  s->fast_sg = 0;
  if (s->flavour != TQG_WGSL_F16SG)
    snprintf(s->fast_why, sizeof s->fast_why, "core flavour: no subgroups");
  else if (env && !strcmp(env, "0"))
    snprintf(s->fast_why, sizeof s->fast_why, "off (TQ_WGSL_FAST=0)");
  else if (lo && lo != hi)
    snprintf(s->fast_why, sizeof s->fast_why, "subgroup sizes vary (%u to %u)",
             lo, hi);
  else if (lo && !TQG_WGSL_FAST_OK(lo))
    snprintf(s->fast_why, sizeof s->fast_why,
             "subgroups of %u (served: 8, 16, 32)", lo);
  else
    s->fast_sg = lo ? (int)lo : 32;
}

/* TQ_WGSL_MAX_BINDING=BYTES lowers the largest storage binding a launch
 * uses (never above the device's), so tests run launches in parts on
 * small buffers. */
static tq_status lower_binding(wg_state *s, char *err, size_t errn) {
  const char *env = getenv("TQ_WGSL_MAX_BINDING");
  if (!env || !*env) return TQ_OK;
  char *end;
  unsigned long long n = strtoull(env, &end, 10);
  if (*end || *env == '-' || n < 4) {
    snprintf(err, errn,
             "TQ_WGSL_MAX_BINDING='%s': expected a byte count of at least 4",
             env);
    return TQ_ERR_INVALID;
  }
  if (n < s->max_binding) s->max_binding = n;
  return TQ_OK;
}

/* best: the richest flavour the adapter runs, whatever the environment. */
static tq_status open_state(int best, void **state, char *err, size_t errn) {
  *state = NULL;
  tq_status st = wg_load(err, errn);
  if (st) return st;
  wg_state *s = calloc(1, sizeof *s);
  if (!s) return TQ_ERR_NOMEM;
  s->instance = new_instance();
  if (!s->instance) {
    snprintf(err, errn, "wgsl backend unavailable: wgpuCreateInstance failed");
    free(s);
    return TQ_ERR_UNAVAILABLE;
  }
  s->adapter = get_adapter(s->instance, err, errn);
  if (!s->adapter) {
    wg_close(s);
    return TQ_ERR_UNAVAILABLE;
  }
  WGPUAdapterInfo info = WGPU_ADAPTER_INFO_INIT;
  uint32_t sg_min = 0, sg_max = 0;
  if (wg.AdapterGetInfo(s->adapter, &info) == WGPUStatus_Success) {
    snprintf(s->name, sizeof s->name, "%.*s",
             (int)(info.device.data ? info.device.length : 0),
             info.device.data ? info.device.data : "");
    sg_min = info.subgroupMinSize;
    sg_max = info.subgroupMaxSize;
    wg.AdapterInfoFreeMembers(info);
  }
  if ((st = choose_flavour(s, best, err, errn))) {
    wg_close(s);
    return st;
  }
  choose_fast(s, sg_min, sg_max);
  const char *checks = getenv("TQ_WGSL_RUNTIME_CHECKS");
  s->trusted =
      wg.DeviceCreateShaderModuleTrusted && !(checks && !strcmp(checks, "1"));
  /* The adapter's own limits: caches past WebGPU's 128 MiB default. */
  WGPULimits limits = WGPU_LIMITS_INIT;
  int have_limits =
      wg.AdapterGetLimits(s->adapter, &limits) == WGPUStatus_Success;
  WGPUFeatureName features[2];
  size_t nf = 0;
  if (s->flavour == TQG_WGSL_F16SG) {
    features[nf++] = WGPUFeatureName_ShaderF16;
    features[nf++] = wg.AdapterHasFeature(s->adapter, WGPUFeatureName_Subgroups)
                         ? WGPUFeatureName_Subgroups
                         : (WGPUFeatureName)WGPUNativeFeature_Subgroup;
  }
  WGPUDeviceDescriptor d = WGPU_DEVICE_DESCRIPTOR_INIT;
  d.requiredFeatureCount = nf;
  d.requiredFeatures = features;
  d.requiredLimits = have_limits ? &limits : NULL;
  d.uncapturedErrorCallbackInfo.callback = on_uncaptured;
  d.uncapturedErrorCallbackInfo.userdata1 = s;
  d.deviceLostCallbackInfo.mode = WGPUCallbackMode_AllowProcessEvents;
  d.deviceLostCallbackInfo.callback = on_lost;
  d.deviceLostCallbackInfo.userdata1 = s;
  wg_wait w = {0};
  WGPURequestDeviceCallbackInfo cb = WGPU_REQUEST_DEVICE_CALLBACK_INFO_INIT;
  cb.mode = WGPUCallbackMode_AllowProcessEvents;
  cb.callback = on_device;
  cb.userdata1 = &w;
  wg.AdapterRequestDevice(s->adapter, &d, cb);
  wait_for(s->instance, &w);
  s->device = w.object;
  if (!s->device) {
    snprintf(err, errn, "wgsl backend unavailable: %s refused a device: %s",
             s->name, w.message);
    wg_close(s);
    return TQ_ERR_UNAVAILABLE;
  }
  s->queue = wg.DeviceGetQueue(s->device);
  /* WebGPU's default maxStorageBufferBindingSize is 128 MiB. */
  s->max_binding = have_limits ? limits.maxStorageBufferBindingSize : (uint64_t)128 << 20;
  if ((st = lower_binding(s, err, errn))) {
    wg_close(s);
    return st;
  }
  WGPUBufferDescriptor bd = WGPU_BUFFER_DESCRIPTOR_INIT;
  bd.usage = WGPUBufferUsage_Storage | WGPUBufferUsage_CopyDst;
  bd.size = 16;
  s->dummy = wg.DeviceCreateBuffer(s->device, &bd);
  bd.usage = WGPUBufferUsage_Uniform | WGPUBufferUsage_CopyDst;
  bd.size = sizeof(tqg_wgsl_params);
  s->params = wg.DeviceCreateBuffer(s->device, &bd);
  *state = s;
  return TQ_OK;
}

static tq_status wg_open(void **state, char *err, size_t errn) {
  return open_state(0, state, err, errn);
}

/* Cache target: the flavour, so both flavours' modules can be cached. */
static const char *wg_target(void *state) {
  wg_state *s = state;
  return tqg_wgsl_flavour_name(s->flavour);
}

/* The core flavour; compile builds the state's flavour. */
static tq_status wg_emit(const tq_variant *v, tqg_source *out, char *err,
                         size_t errn) {
  return tqg_emit_wgsl(v, TQG_WGSL_CORE, "jit", out, err, errn);
}

/* naga (wgpu-native 29) implements subgroup operations as a device
 * feature and rejects the standard `enable subgroups;` directive that
 * browsers require, so the line is blanked (same length: the columns of
 * its messages stay right) before the text reaches it. */
static char *native_text(const char *text, size_t n) {
  char *t = malloc(n + 1);
  if (!t) return NULL;
  memcpy(t, text, n);
  t[n] = 0;
  char *e = strstr(t, "\nenable subgroups;");
  if (e) memset(e + 1, ' ', strlen("enable subgroups;"));
  return t;
}

/* "<variant>.<flavour>.wgsl:LINE:COL: <first line of the message>" with the
 * template line LINE came from. */
static void explain(const tq_variant *v, tqg_wgsl_flavour f,
                    const tqg_source *src, const char *msg, char *err,
                    size_t errn) {
  char name[160], where[300] = "", first[400] = "";
  tqg_variant_name(v, name, sizeof name);
  int line = 0, col = 0;
  const char *at = strstr(msg, "wgsl:");
  if (at) sscanf(at + 5, "%d:%d", &line, &col);
  if (line > 0 && src) tqg_source_origin(src, line, where, sizeof where);
  /* The first line that says what is wrong ("Shader ... error: ..."). */
  const char *p = strstr(msg, "error:");
  if (p) {
    while (p > msg && p[-1] != '\n') p--;
  } else {
    p = msg;
  }
  while (*p == ' ' || *p == '\n') p++;
  const char *end = strchr(p, '\n');
  snprintf(first, sizeof first, "%.*s", end ? (int)(end - p) : (int)strlen(p),
           p);
  if (line > 0)
    snprintf(err, errn, "WGSL error in generated %s.%s.wgsl:%d:%d: %s%s%s%s",
             name, tqg_wgsl_flavour_name(f), line, col, first,
             *where ? " (from " : "", where, *where ? ")" : "");
  else
    snprintf(err, errn, "WGSL error in generated %s.%s.wgsl: %s", name,
             tqg_wgsl_flavour_name(f), first);
}

static WGPUShaderModule shader_module(wg_state *s, const char *text, size_t n,
                                      char *msg, size_t msgn, tq_status *st) {
  char *t = native_text(text, n);
  if (!t) {
    *st = TQ_ERR_NOMEM;
    return NULL;
  }
  WGPUShaderSourceWGSL w = WGPU_SHADER_SOURCE_WGSL_INIT;
  w.code.data = t;
  w.code.length = strlen(t);
  WGPUShaderModuleDescriptor d = WGPU_SHADER_MODULE_DESCRIPTOR_INIT;
  d.nextInChain = &w.chain;
  push_scopes(s);
  /* Without runtime checks naga adds no clamps to array and buffer indices
   * and no iteration counters to loops (all in the hot loops).  Safe for
   * these modules: every index is in range by construction, those taken
   * from buffer contents clamped in the template (kernel.wgsl, "slots"),
   * for buffers whose sizes tq_run checked (runtime.c, check_launch) and
   * wg_launch checks the workspace of; every loop is bounded by shapes or
   * by seq_len(), itself clamped to the capacity.  On Vulkan the driver's
   * robustBufferAccess (a required feature, which wgpu enables) stays on
   * beneath. */
  WGPUShaderModule m = s->trusted
                           ? wg.DeviceCreateShaderModuleTrusted(
                                 s->device, &d, WGPUShaderRuntimeChecks_None)
                           : wg.DeviceCreateShaderModule(s->device, &d);
  *st = pop_scopes(s, msg, msgn);
  free(t);
  if (*st && m) {
    wg.ShaderModuleRelease(m);
    m = NULL;
  }
  return m;
}

/* Compiles src into a module; errors mapped to template lines. */
static tq_status check_text(wg_state *s, const tq_variant *v,
                            tqg_wgsl_flavour f, const tqg_source *src,
                            char *err, size_t errn) {
  char msg[1536] = "";
  tq_status st;
  WGPUShaderModule m =
      shader_module(s, src->text, src->len, msg, sizeof msg, &st);
  if (m) wg.ShaderModuleRelease(m);
  if (st == TQ_ERR_COMPILE)
    explain(v, f, src, msg, err, errn);
  else if (st)
    snprintf(err, errn, "%s", msg[0] ? msg : "out of memory");
  return st;
}

static tq_status wg_compile(void *state, const tq_variant *v,
                            const tqg_source *src, void **binary, size_t *size,
                            char *err, size_t errn) {
  wg_state *s = state;
  tqg_source own;
  tqg_source_init(&own);
  tq_status st = TQ_OK;
  if (s->flavour != TQG_WGSL_CORE) {
    st = tqg_emit_wgsl(v, s->flavour, "jit", &own, err, errn);
    src = &own;
  }
  if (!st) st = check_text(s, v, s->flavour, src, err, errn);
  if (!st) {
    *binary = malloc(src->len);
    if (!*binary)
      st = TQ_ERR_NOMEM;
    else {
      memcpy(*binary, src->text, src->len);
      *size = src->len;
    }
  }
  tqg_source_free(&own);
  return st;
}

static tq_status load_text(wg_state *s, const tq_variant *v, const char *text,
                           size_t n, void **module, char *err, size_t errn);

static void release_stage(wg_module *m, int stage);

static void release_module(wg_module *m) {
  if (!m) return;
  for (int i = 0; i < TQG_WGSL_STAGES; i++) release_stage(m, i);
  if (m->shader) wg.ShaderModuleRelease(m->shader);
  if (m->tables) wg.BufferRelease(m->tables);
  free(m);
}

static WGPUBufferBindingType binding_type(int b) {
  switch (tqg_wgsl_binding_type_of(b)) {
    case TQG_WGSL_UNIFORM:
      return WGPUBufferBindingType_Uniform;
    case TQG_WGSL_READ_ONLY:
      return WGPUBufferBindingType_ReadOnlyStorage;
    default:
      return WGPUBufferBindingType_Storage;
  }
}

/* Layout and pipeline of one stage (entry point); attend_fast is built for
 * subgroups of sg. */
static tq_status make_stage(wg_state *s, wg_module *m, int stage, int sg,
                            char *msg, size_t msgn) {
  WGPUBindGroupLayoutEntry e[TQG_WB_COUNT];
  size_t n = 0;
  uint32_t mask = tqg_wgsl_binding_mask(&m->variant, stage);
  for (int b = 0; b < TQG_WB_COUNT; b++) {
    if (!(mask >> b & 1)) continue;
    WGPUBindGroupLayoutEntry x = WGPU_BIND_GROUP_LAYOUT_ENTRY_INIT;
    x.binding = (uint32_t)b;
    x.visibility = WGPUShaderStage_Compute;
    x.buffer.type = binding_type(b);
    e[n++] = x;
  }
  push_scopes(s);
  WGPUBindGroupLayoutDescriptor ld = WGPU_BIND_GROUP_LAYOUT_DESCRIPTOR_INIT;
  ld.entryCount = n;
  ld.entries = e;
  m->bgl[stage] = wg.DeviceCreateBindGroupLayout(s->device, &ld);
  WGPUPipelineLayoutDescriptor pd = WGPU_PIPELINE_LAYOUT_DESCRIPTOR_INIT;
  pd.bindGroupLayoutCount = 1;
  pd.bindGroupLayouts = &m->bgl[stage];
  WGPUPipelineLayout pl = wg.DeviceCreatePipelineLayout(s->device, &pd);
  WGPUComputePipelineDescriptor cd = WGPU_COMPUTE_PIPELINE_DESCRIPTOR_INIT;
  cd.layout = pl;
  cd.compute.module = m->shader;
  cd.compute.entryPoint = sv(tqg_wgsl_stage_names[stage]);
  WGPUConstantEntry c = WGPU_CONSTANT_ENTRY_INIT;
  if (stage == TQG_WGSL_FAST_STAGE) {
    c.key = sv(TQG_WGSL_FAST_CONSTANT);
    c.value = sg;
    cd.compute.constantCount = 1;
    cd.compute.constants = &c;
  }
  m->pipe[stage] = wg.DeviceCreateComputePipeline(s->device, &cd);
  wg.PipelineLayoutRelease(pl);
  tq_status st = pop_scopes(s, msg, msgn);
  if (st && msgn > 40) {
    char tmp[1536];
    snprintf(tmp, sizeof tmp, "pipeline '%s': %s", tqg_wgsl_stage_names[stage],
             msg);
    snprintf(msg, msgn, "%s", tmp);
  }
  return st;
}

static tq_status read_aligned(wg_state *s, WGPUBuffer src, size_t off,
                              void *dst, size_t n, char *err, size_t errn);

static void release_stage(wg_module *m, int stage) {
  if (m->pipe[stage]) wg.ComputePipelineRelease(m->pipe[stage]);
  if (m->bgl[stage]) wg.BindGroupLayoutRelease(m->bgl[stage]);
  m->pipe[stage] = NULL;
  m->bgl[stage] = NULL;
}

/* A bind group of the given buffers (binding b: buf[b], NULL: unbound),
 * each the window [offset[b], offset[b] + size[b]) of it, or whole where
 * size[b] is 0 or size is NULL. */
static WGPUBindGroup new_group(wg_state *s, WGPUBindGroupLayout layout,
                               const WGPUBuffer buf[TQG_WB_COUNT],
                               const uint64_t *offset, const uint64_t *size) {
  WGPUBindGroupEntry e[TQG_WB_COUNT];
  size_t ne = 0;
  for (int b = 0; b < TQG_WB_COUNT; b++) {
    if (!buf[b]) continue;
    WGPUBindGroupEntry x = WGPU_BIND_GROUP_ENTRY_INIT;
    x.binding = (uint32_t)b;
    x.buffer = buf[b];
    x.offset = size && size[b] ? offset[b] : 0;
    x.size = size && size[b] ? size[b] : WGPU_WHOLE_SIZE;
    e[ne++] = x;
  }
  WGPUBindGroupDescriptor gd = WGPU_BIND_GROUP_DESCRIPTOR_INIT;
  gd.layout = layout;
  gd.entryCount = ne;
  gd.entries = e;
  return wg.DeviceCreateBindGroup(s->device, &gd);
}

/* Records n dispatches in one compute pass and submits it. */
static void submit_pass(wg_state *s, int n, const WGPUComputePipeline *pipe,
                        const WGPUBindGroup *group, const uint32_t (*grid)[3]) {
  WGPUCommandEncoder enc = wg.DeviceCreateCommandEncoder(s->device, NULL);
  WGPUComputePassEncoder pass = wg.CommandEncoderBeginComputePass(enc, NULL);
  for (int i = 0; i < n; i++) {
    wg.ComputePassEncoderSetPipeline(pass, pipe[i]);
    wg.ComputePassEncoderSetBindGroup(pass, 0, group[i], 0, NULL);
    wg.ComputePassEncoderDispatchWorkgroups(pass, grid[i][0], grid[i][1], grid[i][2]);
  }
  wg.ComputePassEncoderEnd(pass);
  WGPUCommandBuffer cmd = wg.CommandEncoderFinish(enc, NULL);
  wg.QueueSubmit(s->queue, 1, &cmd);
  wg.CommandBufferRelease(cmd);
  wg.ComputePassEncoderRelease(pass);
  wg.CommandEncoderRelease(enc);
}

/* attend_fast in probe mode, one workgroup: the subgroup size it ran with
 * and whether its subgroups were laid out otherwise than it needs. */
static tq_status fast_probe(wg_state *s, wg_module *m, uint32_t *size,
                            uint32_t *misfit, char *err, size_t errn) {
  tqg_wgsl_params p = {.probe = 1};
  WGPUBufferDescriptor bd = WGPU_BUFFER_DESCRIPTOR_INIT;
  bd.usage = WGPUBufferUsage_Uniform | WGPUBufferUsage_CopyDst;
  bd.size = sizeof p;
  push_scopes(s);
  WGPUBuffer params = wg.DeviceCreateBuffer(s->device, &bd);
  wg.QueueWriteBuffer(s->queue, params, 0, &p, sizeof p);
  bd.usage = WGPUBufferUsage_Storage | WGPUBufferUsage_CopySrc;
  bd.size = 16;
  WGPUBuffer out = wg.DeviceCreateBuffer(s->device, &bd);
  uint32_t mask = tqg_wgsl_binding_mask(&m->variant, TQG_WGSL_FAST_STAGE);
  WGPUBuffer buf[TQG_WB_COUNT] = {0};
  for (int b = 0; b < TQG_WB_COUNT; b++)
    if (mask >> b & 1)
      /* The probe reads none but params; a buffer may not be bound both
       * read-only and writable in one dispatch, so writable ones get out. */
      buf[b] = b == TQG_WB_PARAMS                                ? params
               : b == TQG_WB_TABLES                              ? m->tables
               : tqg_wgsl_binding_type_of(b) == TQG_WGSL_STORAGE ? out
                                                                 : s->dummy;
  WGPUBindGroup group =
      new_group(s, m->bgl[TQG_WGSL_FAST_STAGE], buf, NULL, NULL);
  const WGPUComputePipeline pipe = m->pipe[TQG_WGSL_FAST_STAGE];
  const uint32_t one[3] = {1, 1, 1};
  submit_pass(s, 1, &pipe, &group, &one);
  wg.BindGroupRelease(group);
  wg.BufferRelease(params);
  char msg[1536] = "";
  tq_status st = pop_scopes(s, msg, sizeof msg);
  if (st) snprintf(err, errn, "attend_fast probe: %s", msg);
  float got[2] = {0, 0};
  if (!st) st = read_aligned(s, out, 0, got, sizeof got, err, errn);
  wg.BufferDestroy(out);
  wg.BufferRelease(out);
  *size = (uint32_t)got[0];
  *misfit = (uint32_t)got[1];
  return st;
}

/* Decode and prefill's entry: attend_fast where the variant, the module
 * text and the device allow it, built for s->fast_sg and confirmed by its
 * probe (a wrong first guess of the size is corrected once, for this and
 * later modules); else the attend entry.  m->attend_path says which. */
static tq_status fast_stage(wg_state *s, wg_module *m, const char *text,
                            size_t n, char *err, size_t errn) {
  static const char entry[] = "\nfn attend_fast(";
  const char *why = NULL;
  char seen[96];
  if (s->flavour == TQG_WGSL_CORE) {
    snprintf(m->attend_path, sizeof m->attend_path,
             "fallback: attend without subgroups (core flavour)");
    return TQ_OK;
  }
  if (!tqg_wgsl_fast(&m->variant)) {
    snprintf(m->attend_path, sizeof m->attend_path, "attend with subgroups");
    return TQ_OK;
  }
  if (!memmem(text, n, entry, sizeof entry - 1))
    why = "the module has no attend_fast entry";
  for (int tries = 0; !why && s->fast_sg && tries < 2; tries++) {
    int sg = s->fast_sg;
    char msg[1536] = "";
    tq_status st = make_stage(s, m, TQG_WGSL_FAST_STAGE, sg, msg, sizeof msg);
    if (st) {
      snprintf(err, errn, "%s", msg);
      return st;
    }
    uint32_t got = 0, misfit = 0;
    if ((st = fast_probe(s, m, &got, &misfit, err, errn))) return st;
    if (got == (uint32_t)sg && !misfit) {
      snprintf(m->attend_path, sizeof m->attend_path,
               "fast attend, subgroups of %d", sg);
      return TQ_OK;
    }
    release_stage(m, TQG_WGSL_FAST_STAGE);
    if (got != (uint32_t)sg && TQG_WGSL_FAST_OK(got) && !tries) {
      s->fast_sg = (int)got;
      continue;
    }
    snprintf(seen, sizeof seen, "its probe ran subgroups of %u%s", got,
             got == (uint32_t)sg ? ", not in aligned runs" : "");
    why = seen;
    snprintf(s->fast_why, sizeof s->fast_why, "%s", seen);
    s->fast_sg = 0;
  }
  snprintf(m->attend_path, sizeof m->attend_path,
           "fallback: attend with subgroups, no fast entry: %s",
           why ? why : s->fast_why);
  return TQ_OK;
}

static tq_status load_text(wg_state *s, const tq_variant *v, const char *text,
                           size_t n, void **module, char *err, size_t errn) {
  *module = NULL;
  wg_module *m = calloc(1, sizeof *m);
  if (!m) return TQ_ERR_NOMEM;
  m->variant = *v;
  tqg_variant_normalize(&m->variant);
  char msg[1536] = "";
  tq_status st;
  m->shader = shader_module(s, text, n, msg, sizeof msg, &st);
  if (st == TQ_ERR_COMPILE) explain(v, s->flavour, NULL, msg, err, errn);
  for (int i = 0; !st && i < TQG_WGSL_STAGES; i++)
    if (i != TQG_WGSL_FAST_STAGE &&
        (st = make_stage(s, m, i, 0, msg, sizeof msg)))
      snprintf(err, errn, "%s", msg);
  tqg_wgsl_tables tb;
  if (!st && !(st = tqg_wgsl_tables_init(v, &tb))) {
    WGPUBufferDescriptor bd = WGPU_BUFFER_DESCRIPTOR_INIT;
    bd.usage = WGPUBufferUsage_Storage | WGPUBufferUsage_CopyDst;
    bd.size = ((uint64_t)tb.n * 4 + 15) & ~(uint64_t)15;
    m->tables = wg.DeviceCreateBuffer(s->device, &bd);
    wg.QueueWriteBuffer(s->queue, m->tables, 0, tb.data, (size_t)tb.n * 4);
    tqg_wgsl_tables_free(&tb);
  }
  if (!st) st = fast_stage(s, m, text, n, err, errn);
  if (st) {
    if (!err[0]) snprintf(err, errn, "%s", msg);
    release_module(m);
    return st;
  }
  *module = m;
  return TQ_OK;
}

static tq_status wg_load_binary(void *state, const tq_variant *v,
                                const void *binary, size_t size, void **module,
                                char *err, size_t errn) {
  if (!binary || !size) {
    snprintf(err, errn, "empty WGSL module");
    return TQ_ERR_INVALID;
  }
  return load_text(state, v, binary, size, module, err, errn);
}

/* AOT: the shaders of the state's flavour ("<flavour>/<stage>"), else the
 * core ones (a spec may ship only those); all stages share one module. */
static tq_status wg_load_aot(void *state, const tq_dispatch_entry *e,
                             void **module, char *err, size_t errn) {
  wg_state *s = state;
  const tq_dispatch_shader *pick = NULL;
  for (int pass = 0; pass < 2 && !pick; pass++) {
    char want[64];
    snprintf(want, sizeof want, "%s/encode",
             tqg_wgsl_flavour_name(pass ? TQG_WGSL_CORE : s->flavour));
    for (int i = 0; i < e->shader_count && !pick; i++)
      if (e->shaders[i].stage && !strcmp(e->shaders[i].stage, want))
        pick = &e->shaders[i];
  }
  if (!pick || !pick->code || !pick->code_size) {
    snprintf(err, errn, "dispatch entry %s has no WGSL shaders", e->name);
    return TQ_ERR_INVALID;
  }
  return load_text(s, &e->variant, pick->code, pick->code_size, module, err,
                   errn);
}

/* Kept bind groups of a module's layouts go with it (a layout's handle
 * could be reused by the next module's). */
static void wg_unload(void *state, void *module) {
  wg_state *s = state;
  wg_module *m = module;
  for (int i = 0; m && i < WG_GROUPS; i++)
    for (int k = 0; k < TQG_WGSL_STAGES; k++)
      if (m->bgl[k] && s->groups[i].layout == m->bgl[k])
        drop_group(&s->groups[i]);
  release_module(module);
}

/* ---- memory ------------------------------------------------------------ */
static tq_status wg_alloc(void *state, size_t bytes, void **mem, char *err,
                          size_t errn) {
  wg_state *s = state;
  WGPUBufferDescriptor bd = WGPU_BUFFER_DESCRIPTOR_INIT;
  bd.usage = WGPUBufferUsage_Storage | WGPUBufferUsage_CopySrc |
             WGPUBufferUsage_CopyDst;
  bd.size = ((uint64_t)bytes + 15) & ~(uint64_t)15;
  push_scopes(s);
  WGPUBuffer b = wg.DeviceCreateBuffer(s->device, &bd);
  char msg[1536] = "";
  tq_status st = pop_scopes(s, msg, sizeof msg);
  if (st || !b) {
    if (b) wg.BufferRelease(b);
    snprintf(err, errn, "%s", msg[0] ? msg : "wgpuDeviceCreateBuffer failed");
    *mem = NULL;
    return st == TQ_ERR_COMPILE ? TQ_ERR_INVALID : TQ_ERR_NOMEM;
  }
  *mem = b;
  return TQ_OK;
}

static void wg_free(void *state, void *mem) {
  wg_state *s = state;
  if (!mem) return;
  for (int i = 0; i < WG_GROUPS; i++)
    for (int b = 0; b < TQG_WB_COUNT; b++)
      if (s->groups[i].layout && s->groups[i].buf[b] == mem) {
        drop_group(&s->groups[i]);
        break;
      }
  wg.BufferDestroy(mem);
  wg.BufferRelease(mem);
}

/* Reads [off, off + n) of a buffer through a mapped staging copy; off and
 * n multiples of 4. */
static tq_status read_aligned(wg_state *s, WGPUBuffer src, size_t off,
                              void *dst, size_t n, char *err, size_t errn) {
  WGPUBufferDescriptor bd = WGPU_BUFFER_DESCRIPTOR_INIT;
  bd.usage = WGPUBufferUsage_MapRead | WGPUBufferUsage_CopyDst;
  bd.size = n;
  WGPUBuffer staging = wg.DeviceCreateBuffer(s->device, &bd);
  WGPUCommandEncoder enc = wg.DeviceCreateCommandEncoder(s->device, NULL);
  wg.CommandEncoderCopyBufferToBuffer(enc, src, off, staging, 0, n);
  WGPUCommandBuffer cmd = wg.CommandEncoderFinish(enc, NULL);
  wg.QueueSubmit(s->queue, 1, &cmd);
  wg.CommandBufferRelease(cmd);
  wg.CommandEncoderRelease(enc);
  wg_wait w = {0};
  WGPUBufferMapCallbackInfo cb = WGPU_BUFFER_MAP_CALLBACK_INFO_INIT;
  cb.mode = WGPUCallbackMode_AllowProcessEvents;
  cb.callback = on_map;
  cb.userdata1 = &w;
  wg.BufferMapAsync(staging, WGPUMapMode_Read, 0, n, cb);
  while (!w.done) {
    wg.DevicePoll(s->device, 1, NULL);
    wg.InstanceProcessEvents(s->instance);
  }
  tq_status st = TQ_OK;
  if (w.status != (int)WGPUMapAsyncStatus_Success) {
    snprintf(err, errn, "map for reading failed: %s", w.message);
    st = TQ_ERR_INVALID;
  } else {
    const void *p = wg.BufferGetConstMappedRange(staging, 0, n);
    if (p)
      memcpy(dst, p, n);
    else {
      snprintf(err, errn, "mapped range unavailable");
      st = TQ_ERR_INVALID;
    }
    wg.BufferUnmap(staging);
  }
  wg.BufferDestroy(staging);
  wg.BufferRelease(staging);
  return st;
}

static tq_status wg_read(void *state, const void *mem, size_t off, void *dst,
                         size_t n, char *err, size_t errn) {
  wg_state *s = state;
  if (!n) return TQ_OK;
  size_t lo = off & ~(size_t)3, hi = (off + n + 3) & ~(size_t)3;
  if (lo == off && hi == off + n)
    return read_aligned(s, (WGPUBuffer)mem, off, dst, n, err, errn);
  unsigned char *tmp = malloc(hi - lo);
  if (!tmp) return TQ_ERR_NOMEM;
  tq_status st = read_aligned(s, (WGPUBuffer)mem, lo, tmp, hi - lo, err, errn);
  if (!st) memcpy(dst, tmp + (off - lo), n);
  free(tmp);
  return st;
}

/* WebGPU writes whole words: an unaligned range is read, patched and
 * written back. */
static tq_status wg_write(void *state, void *mem, size_t off, const void *src,
                          size_t n, char *err, size_t errn) {
  wg_state *s = state;
  if (!n) return TQ_OK;
  size_t lo = off & ~(size_t)3, hi = (off + n + 3) & ~(size_t)3;
  if (lo == off && hi == off + n) {
    wg.QueueWriteBuffer(s->queue, mem, off, src, n);
    return TQ_OK;
  }
  unsigned char *tmp = malloc(hi - lo);
  if (!tmp) return TQ_ERR_NOMEM;
  tq_status st = read_aligned(s, mem, lo, tmp, hi - lo, err, errn);
  if (!st) {
    memcpy(tmp + (off - lo), src, n);
    wg.QueueWriteBuffer(s->queue, mem, lo, tmp, hi - lo);
  }
  free(tmp);
  return st;
}

static void *wg_host_ptr(void *state, void *mem) {
  (void)state;
  (void)mem;
  return NULL; /* device memory: kernels bound-check instead */
}

/* ---- launch ------------------------------------------------------------ */
static size_t wg_workspace(void *state, void *module, tq_op op,
                           const tq_kargs *a) {
  (void)state;
  wg_module *m = module;
  return tq_wgsl_workspace(&m->variant, op, a);
}

static WGPUBuffer binding_buffer(wg_state *s, const tq_kargs *a,
                                 WGPUBuffer params, WGPUBuffer tables, int b) {
  const void *p = NULL;
  switch (b) {
    case TQG_WB_PARAMS:
      return params;
    case TQG_WB_TABLES:
      return tables;
    case TQG_WB_K_CACHE:
      p = a->k_cache;
      break;
    case TQG_WB_V_CACHE:
      p = a->v_cache;
      break;
    case TQG_WB_BLOCK_TABLE:
      p = a->block_table;
      break;
    case TQG_WB_SEQ_LENS:
      p = a->seq_lens;
      break;
    case TQG_WB_CHANNEL_PERM:
      p = a->channel_perm;
      break;
    case TQG_WB_Q:
      p = a->q;
      break;
    case TQG_WB_K:
      p = a->k;
      break;
    case TQG_WB_V:
      p = a->v;
      break;
    case TQG_WB_OUT:
      p = a->out;
      break;
    case TQG_WB_WORKSPACE:
      p = a->workspace;
      break;
  }
  return p ? (WGPUBuffer)p : s->dummy;
}

/* The bind group of a stage for a part of a launch: a kept one, else a
 * new one kept in place of the oldest. */
static WGPUBindGroup bind_group(wg_state *s, wg_module *m, int stage,
                                const tq_kargs *a, const tq_wgsl_part *p) {
  uint32_t mask = tqg_wgsl_binding_mask(&m->variant, stage);
  WGPUBuffer buf[TQG_WB_COUNT] = {0};
  uint64_t offset[TQG_WB_COUNT] = {0}, size[TQG_WB_COUNT] = {0};
  for (int b = 0; b < TQG_WB_COUNT; b++)
    if (mask >> b & 1) {
      buf[b] = binding_buffer(s, a, s->params, m->tables, b);
      offset[b] = p->offset[b];
      size[b] = p->size[b];
    }
  for (int i = 0; i < WG_GROUPS; i++) {
    wg_group *g = &s->groups[i];
    if (g->layout == m->bgl[stage] && !memcmp(g->buf, buf, sizeof buf) &&
        !memcmp(g->offset, offset, sizeof offset) &&
        !memcmp(g->size, size, sizeof size))
      return g->group;
  }
  wg_group *g = &s->groups[s->next_group++ % WG_GROUPS];
  drop_group(g);
  g->group = new_group(s, m->bgl[stage], buf, offset, size);
  g->layout = m->bgl[stage];
  memcpy(g->buf, buf, sizeof buf);
  memcpy(g->offset, offset, sizeof offset);
  memcpy(g->size, size, sizeof size);
  for (int b = 0; b < TQG_WB_COUNT; b++)
    if (buf[b]) wg.BufferAddRef(buf[b]);
  return g->group;
}

/* Why a buffer a launch binds whole must fit one binding. */
static const char *whole_why(const tq_variant *v, int b) {
  if ((b == TQG_WB_K_CACHE || b == TQG_WB_V_CACHE) && v->layout == TQ_PAGED)
    return "a paged cache's pool is bound whole, since any sequence's "
           "blocks may lie anywhere in it: use a smaller pool";
  return "it is bound whole";
}

/* A launch runs as the parts of its plan (wgsl_plan.h), each its own
 * compute pass with its uniform block written before it (queue order
 * gives each pass its own values).  Every part is planned and every
 * buffer bound whole checked before any runs. */
static tq_status wg_launch(void *state, void *module, tq_op op,
                           const tq_kargs *a, char *err, size_t errn) {
  wg_state *s = state;
  wg_module *m = module;
  const tq_variant *v = &m->variant;
  int fast = m->pipe[TQG_WGSL_FAST_STAGE] != NULL;
  size_t need = wg_workspace(s, m, op, a);
  if (need > a->workspace_bytes || (need && !a->workspace)) {
    snprintf(err, errn,
             "needs %zu bytes of workspace, got %zu: pass a workspace buffer "
             "of tq_workspace_size() bytes",
             need, a->workspace ? a->workspace_bytes : 0);
    return TQ_ERR_INVALID;
  }
  if (s->lost) {
    snprintf(err, errn, "the WebGPU device was lost");
    return TQ_ERR_INVALID;
  }
  tq_wgsl_part p;
  tq_status st;
  for (int first = 0; first < a->batch; first += (int)p.params.batch)
    if ((st = tq_wgsl_plan(v, op, a, fast, s->max_binding, first, &p, err,
                           errn)))
      return st;
  for (int i = 0; i < p.n_steps; i++) {
    uint32_t mask = tqg_wgsl_binding_mask(v, p.steps[i].stage);
    for (int b = 0; b < TQG_WB_COUNT; b++) {
      if (!(mask >> b & 1) || b == TQG_WB_PARAMS || p.size[b]) continue;
      uint64_t size = wg.BufferGetSize(binding_buffer(s, a, NULL, m->tables, b));
      if (size > s->max_binding) {
        snprintf(err, errn,
                 "%s: binding %d (%s) is a buffer of %llu bytes, past this "
                 "device's largest storage binding (%llu bytes); %s",
                 tqg_wgsl_stage_names[p.steps[i].stage], b,
                 tqg_wgsl_binding_name(b), (unsigned long long)size,
                 (unsigned long long)s->max_binding, whole_why(v, b));
        return TQ_ERR_INVALID;
      }
    }
  }
  push_scopes(s);
  for (int first = 0; first < a->batch; first += (int)p.params.batch) {
    tq_wgsl_plan(v, op, a, fast, s->max_binding, first, &p, err, errn);
    wg.QueueWriteBuffer(s->queue, s->params, 0, &p.params, sizeof p.params);
    WGPUComputePipeline pipe[TQ_WGSL_MAX_STEPS];
    WGPUBindGroup group[TQ_WGSL_MAX_STEPS];
    uint32_t grid[TQ_WGSL_MAX_STEPS][3];
    for (int i = 0; i < p.n_steps; i++) {
      pipe[i] = m->pipe[p.steps[i].stage];
      group[i] = bind_group(s, m, p.steps[i].stage, a, &p);
      memcpy(grid[i], p.steps[i].grid, sizeof grid[i]);
    }
    submit_pass(s, p.n_steps, pipe, group, (const uint32_t(*)[3])grid);
  }
  char msg[1536] = "";
  st = pop_scopes(s, msg, sizeof msg);
  if (st) {
    /* A bind group made in this launch may be the invalid one. */
    for (int i = 0; i < WG_GROUPS; i++) drop_group(&s->groups[i]);
    snprintf(err, errn, "%s", msg);
    return TQ_ERR_INVALID;
  }
  return TQ_OK;
}

static tq_status wg_sync(void *state, char *err, size_t errn) {
  wg_state *s = state;
  wg.DevicePoll(s->device, 1, NULL);
  wg.InstanceProcessEvents(s->instance);
  if (s->uncaptured[0]) {
    snprintf(err, errn, "%s", s->uncaptured);
    s->uncaptured[0] = 0;
    return TQ_ERR_INVALID;
  }
  if (s->lost) {
    snprintf(err, errn, "the WebGPU device was lost");
    return TQ_ERR_INVALID;
  }
  return TQ_OK;
}

static const char *wg_kernel_path(void *state, void *module, tq_op op) {
  (void)state;
  wg_module *m = module;
  return op == TQ_OP_DECODE || op == TQ_OP_PREFILL ? m->attend_path : NULL;
}

/* ---- generation-time validation ------------------------------------- */
struct tq_wgsl_validator {
  wg_state *s;
};

tq_status tq_wgsl_validator_open(tq_wgsl_validator **out, char *err,
                                 size_t errn) {
  *out = NULL;
  tq_wgsl_validator *val = calloc(1, sizeof *val);
  if (!val) return TQ_ERR_NOMEM;
  void *s = NULL;
  tq_status st = open_state(1, &s, err, errn);
  if (st) {
    free(val);
    return st;
  }
  val->s = s;
  *out = val;
  return TQ_OK;
}

void tq_wgsl_validator_close(tq_wgsl_validator *val) {
  if (!val) return;
  wg_close(val->s);
  free(val);
}

int tq_wgsl_validator_has(const tq_wgsl_validator *val, tqg_wgsl_flavour f) {
  return f == TQG_WGSL_CORE || val->s->flavour == f;
}

tq_status tq_wgsl_validate(tq_wgsl_validator *val, const tq_variant *v,
                           tqg_wgsl_flavour f, const tqg_source *src, char *err,
                           size_t errn) {
  if (!tq_wgsl_validator_has(val, f)) {
    snprintf(err, errn, "%s cannot compile the %s flavour", val->s->name,
             tqg_wgsl_flavour_name(f));
    return TQ_ERR_UNAVAILABLE;
  }
  tq_status st = check_text(val->s, v, f, src, err, errn);
  void *m = NULL;
  /* Pipelines too: workgroup memory and other limits are checked there. */
  if (!st) st = load_text(val->s, v, src->text, src->len, &m, err, errn);
  release_module(m);
  return st;
}

const tq_backend_ops tq_backend_wgsl = {
    .name = "wgsl",
    .binary_kind = "wgsl",
    .target = wg_target,
    .probe = wg_probe,
    .open = wg_open,
    .close = wg_close,
    .emit = wg_emit,
    .compile = wg_compile,
    .load = wg_load_binary,
    .load_aot = wg_load_aot,
    .unload = wg_unload,
    .alloc = wg_alloc,
    .free = wg_free,
    .write = wg_write,
    .read = wg_read,
    .host_ptr = wg_host_ptr,
    .workspace = wg_workspace,
    .launch = wg_launch,
    .sync = wg_sync,
    .path = wg_kernel_path,
};
#endif
