/* vulkan.c - the Vulkan backend.  Vulkan is loaded at run time through volk
 * (backends/volk_impl.c), so nothing links against libvulkan and a machine
 * without a loader or a device gets TQ_ERR_UNAVAILABLE with the reason.
 *
 * A module is one variant: a compute pipeline per stage (encode, attend,
 * reduce, dequant; gen/vulkan.h) and a storage buffer of its constant
 * tables.  Every stage sees the same 11 storage bindings and 36 bytes of
 * push constants (templates/vulkan/common.comp); a launch records one
 * command buffer (attend + reduce for decode and prefill), submits it with
 * its own fence and returns; tq_sync waits for the fences.  Memory is
 * device-local; where the device-local memory is also host-visible on a CPU
 * or integrated device (lavapipe) it is mapped, so host_ptr works and copies
 * are memcpy; elsewhere copies go through a staging buffer.  Pipelines are
 * created through a VkPipelineCache kept on disk beside the JIT cache. */
#define _POSIX_C_SOURCE 200809L
#include "vulkan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <volk.h>

#include "backend.h"
#include "core.h"
#include "internal.h"
#include "vulkan_backend.h"

#define RING 8              /* command buffers in flight */
#define POOL_SETS 1024      /* descriptor sets before the pool is recycled */
#define STAGING (64u << 20) /* bytes per staging copy */
#define MIN_SLICE 256       /* context tokens per split, at least */
#define MAX_SPLITS 128

typedef struct vk_buf {
  VkBuffer buf;
  VkDeviceMemory mem;
  VkDeviceSize size;
  void *map; /* persistent mapping on unified memory, else NULL */
} vk_buf;

typedef struct vk_pipe {
  char stage[16];
  VkPipeline pipe;
  uint32_t bindings;
} vk_pipe;

typedef struct vk_module {
  tq_variant variant;
  int n;
  vk_pipe pipe[TQG_VK_MAX_STAGES];
  int encode, attend, reduce, dequant; /* indices into pipe */
  int attend_rank;     /* stage_rank of the attend build that runs */
  char attend_path[96]; /* what tq_kernel_path says of it */
  vk_buf *tables;
} vk_module;

typedef struct vk_state {
  VkInstance inst;
  VkPhysicalDevice phys;
  VkDevice dev;
  struct VolkDeviceTable vk;
  VkQueue queue;
  uint32_t family;
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties memprops;
  int subgroups;       /* subgroup arithmetic in compute shaders */
  int fast_sg;         /* subgroup size of the fast attend stage, or 0 */
  int unified;         /* device-local memory is host-visible: map it */
  uint32_t mem_device; /* memory type of buffers */
  uint32_t mem_staging;
  VkDescriptorSetLayout set_layout;
  VkPipelineLayout layout;
  VkDescriptorPool pool;
  VkCommandPool cmd_pool;
  VkCommandBuffer cb[RING];
  VkFence fence[RING];
  int busy[RING], next;
  VkQueryPool queries; /* two timestamps per ring slot, or VK_NULL_HANDLE */
  double gpu_ms;       /* timestamped time of finished submissions */
  VkPipelineCache pcache;
  char pcache_path[1200];
  vk_buf *dummy, *staging;
  int target_groups; /* workgroups a decode launch aims for */
  char target[16];
  char features[256];
} vk_state;

/* ---- messages ----------------------------------------------------------- */
static const char *vk_result(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
      return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV:
      return "VK_ERROR_INVALID_SHADER_NV";
    default:
      return "VkResult";
  }
}

/* TQ_OK, or err = "<what>: <VkResult>" and the matching status. */
static tq_status vk_check(VkResult r, const char *what, char *err,
                          size_t errn) {
  if (r == VK_SUCCESS) return TQ_OK;
  snprintf(err, errn, "%s: %s (%d)", what, vk_result(r), (int)r);
  return r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY
             ? TQ_ERR_NOMEM
             : TQ_ERR_INVALID;
}

/* ---- loader and device selection ---------------------------------------- */
static tq_status vk_probe(char *err, size_t errn) {
  if (volkInitialize() != VK_SUCCESS) {
    snprintf(
        err, errn,
        "vulkan backend unavailable: no Vulkan loader (libvulkan.so.1); "
        "install libvulkan1 and a driver (mesa-vulkan-drivers for the CPU)");
    return TQ_ERR_UNAVAILABLE;
  }
  uint32_t version = volkGetInstanceVersion();
  if (version < VK_API_VERSION_1_1) {
    snprintf(
        err, errn,
        "vulkan backend unavailable: the loader is Vulkan %u.%u; 1.1 is needed",
        VK_API_VERSION_MAJOR(version), VK_API_VERSION_MINOR(version));
    return TQ_ERR_UNAVAILABLE;
  }
  return TQ_OK;
}

static int type_rank(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return 1;
    default:
      return 0;
  }
}

/* Picks a device: TQ_VULKAN_DEVICE (an index, or a substring of the name),
 * else the first discrete GPU, then integrated, virtual, CPU. */
static tq_status pick_device(vk_state *s, char *err, size_t errn) {
  uint32_t n = 0;
  tq_status st = vk_check(vkEnumeratePhysicalDevices(s->inst, &n, NULL),
                          "vkEnumeratePhysicalDevices", err, errn);
  if (st) return st;
  if (n == 0) {
    snprintf(err, errn,
             "vulkan backend unavailable: the loader found no Vulkan device "
             "(install a driver: mesa-vulkan-drivers for the CPU)");
    return TQ_ERR_UNAVAILABLE;
  }
  VkPhysicalDevice devs[32];
  if (n > 32) n = 32;
  vkEnumeratePhysicalDevices(s->inst, &n, devs);
  const char *env = getenv("TQ_VULKAN_DEVICE");
  int chosen = -1, best = -1;
  char names[512] = "";
  size_t used = 0;
  for (uint32_t i = 0; i < n; i++) {
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(devs[i], &p);
    if (used < sizeof names)
      used += (size_t)snprintf(names + used, sizeof names - used, "%s%u: %s",
                               i ? ", " : "", i, p.deviceName);
    if (p.apiVersion < VK_API_VERSION_1_1) continue;
    if (env && *env) {
      char *end;
      long k = strtol(env, &end, 10);
      if ((!*end && k == (long)i) || (*end && strstr(p.deviceName, env))) {
        if (chosen < 0) chosen = (int)i;
      }
    } else if (best < 0 || type_rank(p.deviceType) > best) {
      best = type_rank(p.deviceType);
      chosen = (int)i;
    }
  }
  if (chosen < 0) {
    if (env && *env)
      snprintf(
          err, errn,
          "TQ_VULKAN_DEVICE='%s' matches no Vulkan 1.1 device (devices: %s)",
          env, names);
    else
      snprintf(err, errn,
               "vulkan backend unavailable: no Vulkan 1.1 device (devices: %s)",
               names);
    return env && *env ? TQ_ERR_INVALID : TQ_ERR_UNAVAILABLE;
  }
  s->phys = devs[chosen];
  vkGetPhysicalDeviceProperties(s->phys, &s->props);
  vkGetPhysicalDeviceMemoryProperties(s->phys, &s->memprops);
  return TQ_OK;
}

/* Can compute subgroups have another size than VkPhysicalDeviceSubgroup-
 * Properties::subgroupSize?  Only with subgroup size control (Vulkan 1.3
 * or VK_EXT_subgroup_size_control), whose min and max say which sizes. */
static void subgroup_size_range(vk_state *s, uint32_t size, uint32_t *lo,
                                uint32_t *hi) {
  *lo = *hi = size;
  int control = s->props.apiVersion >= VK_API_VERSION_1_3;
  uint32_t n = 0;
  if (!control &&
      vkEnumerateDeviceExtensionProperties(s->phys, NULL, &n, NULL) ==
          VK_SUCCESS &&
      n) {
    VkExtensionProperties *e = calloc(n, sizeof *e);
    if (e && vkEnumerateDeviceExtensionProperties(s->phys, NULL, &n, e) ==
                 VK_SUCCESS)
      for (uint32_t i = 0; i < n; i++)
        control |= !strcmp(e[i].extensionName,
                           VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
    free(e);
  }
  if (!control) return;
  VkPhysicalDeviceSubgroupSizeControlProperties sc = {
      .sType =
          VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sc};
  vkGetPhysicalDeviceProperties2(s->phys, &p2);
  *lo = sc.minSubgroupSize;
  *hi = sc.maxSubgroupSize;
}

/* The fast attend stage (templates/vulkan/attend_fast.comp) is built for
 * one subgroup size: it needs subgroup arithmetic and shuffles in compute
 * shaders and a size that cannot vary (min == max under subgroup size
 * control, else VkPhysicalDeviceSubgroupProperties::subgroupSize, the size
 * Vulkan 1.1 compute shaders get) that divides its 32-token chunk: 32 on
 * NVIDIA, lavapipe's vector width (8 with AVX2).  Elsewhere (AMD's and
 * Intel's varying sizes, 64-wide waves) the attend stage with subgroups
 * runs instead; TQ_VULKAN_FAST=0 takes that path too. */
static int fast_size(vk_state *s, const VkPhysicalDeviceSubgroupProperties *sg,
                     char *why, size_t whyn) {
  uint32_t lo, hi;
  subgroup_size_range(s, sg->subgroupSize, &lo, &hi);
  const char *env = getenv("TQ_VULKAN_FAST");
  const char *no = !s->subgroups ? "no subgroups"
                   : !(sg->supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT)
                       ? "no subgroup shuffles"
                   : lo != hi ? "varying subgroup sizes"
                   : !TQG_VK_FAST_OK(sg->subgroupSize)
                       ? "subgroup size not 4, 8, 16 or 32"
                   : env && !strcmp(env, "0") ? "off (TQ_VULKAN_FAST=0)"
                                              : NULL;
  if (no)
    snprintf(why, whyn, "%s", no);
  else
    snprintf(why, whyn, "yes (subgroups of %u)", sg->subgroupSize);
  return no ? 0 : (int)sg->subgroupSize;
}

/* The probe of optional features: only subgroup arithmetic and shuffles
 * are used (by the attend stages); the others are reported. */
static void probe_features(vk_state *s) {
  VkPhysicalDeviceSubgroupProperties sg = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 p2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &sg};
  vkGetPhysicalDeviceProperties2(s->phys, &p2);
  VkPhysicalDevice16BitStorageFeatures f16s = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8Features f16 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
      .pNext = &f16s};
  VkPhysicalDeviceFeatures2 f2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f16};
  vkGetPhysicalDeviceFeatures2(s->phys, &f2);
  s->subgroups =
      (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
      (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
      (sg.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
      sg.subgroupSize >= 1;
  /* TQ_VULKAN_SUBGROUPS=0 takes the path of devices without them (a
   * driver bug's workaround, and how tests reach the fallback). */
  const char *env = getenv("TQ_VULKAN_SUBGROUPS");
  int off = env && !strcmp(env, "0");
  if (off) s->subgroups = 0;
  char fast[64];
  s->fast_sg = fast_size(s, &sg, fast, sizeof fast);
  snprintf(s->features, sizeof s->features,
           "subgroups %s (size %u), fast attend %s, shaderFloat16 %d, "
           "shaderInt8 %d, storageBuffer16BitAccess %d",
           s->subgroups ? "yes"
           : off        ? "off (TQ_VULKAN_SUBGROUPS=0)"
                        : "no",
           sg.subgroupSize, fast, (int)f16.shaderFloat16, (int)f16.shaderInt8,
           (int)f16s.storageBuffer16BitAccess);
}

/* Memory types: device-local for buffers (mapped when also host-visible and
 * coherent on a CPU or integrated device), host-visible for staging. */
static tq_status pick_memory(vk_state *s, char *err, size_t errn) {
  int dev = -1, unified = -1, staging = -1;
  for (uint32_t i = 0; i < s->memprops.memoryTypeCount; i++) {
    VkMemoryPropertyFlags f = s->memprops.memoryTypes[i].propertyFlags;
    int host = (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
               (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && dev < 0) dev = (int)i;
    if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && host && unified < 0)
      unified = (int)i;
    if (host && staging < 0) staging = (int)i;
  }
  int shared_memory =
      s->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ||
      s->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
  if (unified >= 0 && shared_memory) {
    s->unified = 1;
    dev = unified;
  }
  if (dev < 0) dev = staging;
  if (dev < 0 || staging < 0) {
    snprintf(err, errn, "%s has no usable memory type", s->props.deviceName);
    return TQ_ERR_UNAVAILABLE;
  }
  s->mem_device = (uint32_t)dev;
  s->mem_staging = (uint32_t)staging;
  return TQ_OK;
}

/* ---- buffers ------------------------------------------------------------ */
static void buf_free(vk_state *s, vk_buf *b) {
  if (!b) return;
  if (b->map) s->vk.vkUnmapMemory(s->dev, b->mem);
  if (b->buf) s->vk.vkDestroyBuffer(s->dev, b->buf, NULL);
  if (b->mem) s->vk.vkFreeMemory(s->dev, b->mem, NULL);
  free(b);
}

static tq_status buf_new(vk_state *s, VkDeviceSize bytes, uint32_t type,
                         int map, vk_buf **out, char *err, size_t errn) {
  *out = NULL;
  vk_buf *b = calloc(1, sizeof *b);
  if (!b) return TQ_ERR_NOMEM;
  b->size = bytes;
  VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
                           .size = bytes,
                           .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                    VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
  tq_status st = vk_check(s->vk.vkCreateBuffer(s->dev, &bi, NULL, &b->buf),
                          "vkCreateBuffer", err, errn);
  VkMemoryRequirements req;
  if (!st) {
    s->vk.vkGetBufferMemoryRequirements(s->dev, b->buf, &req);
    if (!(req.memoryTypeBits & (1u << type))) {
      snprintf(err, errn, "buffer memory cannot live in memory type %u", type);
      st = TQ_ERR_INVALID;
    }
  }
  if (!st) {
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .allocationSize = req.size,
                               .memoryTypeIndex = type};
    st = vk_check(s->vk.vkAllocateMemory(s->dev, &ai, NULL, &b->mem),
                  "vkAllocateMemory", err, errn);
  }
  if (!st)
    st = vk_check(s->vk.vkBindBufferMemory(s->dev, b->buf, b->mem, 0),
                  "vkBindBufferMemory", err, errn);
  if (!st && map)
    st = vk_check(
        s->vk.vkMapMemory(s->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map),
        "vkMapMemory", err, errn);
  if (st) {
    buf_free(s, b);
    return st;
  }
  *out = b;
  return TQ_OK;
}

/* ---- submissions -------------------------------------------------------- */
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* Waits for ring slot i and adds its timestamped time.  The fence is
 * polled for up to SPIN_MS first: a blocking wait can wake the thread well
 * after the GPU has finished (bench/RESULTS.md has the host time around a
 * decode step), polling sees it at once; longer work falls back to the
 * blocking wait. */
#define SPIN_MS 2.0
static tq_status finish_slot(vk_state *s, int i, char *err, size_t errn) {
  if (!s->busy[i]) return TQ_OK;
  VkResult r = s->vk.vkGetFenceStatus(s->dev, s->fence[i]);
  for (double t0 = now_ms(); r == VK_NOT_READY && now_ms() - t0 < SPIN_MS;)
    r = s->vk.vkGetFenceStatus(s->dev, s->fence[i]);
  if (r == VK_NOT_READY) r = s->vk.vkWaitForFences(s->dev, 1, &s->fence[i], VK_TRUE, UINT64_MAX);
  tq_status st = vk_check(r, "vkWaitForFences", err, errn);
  if (st) return st;
  s->busy[i] = 0;
  if (s->queries) {
    uint64_t ts[2];
    if (s->vk.vkGetQueryPoolResults(s->dev, s->queries, (uint32_t)(2 * i), 2,
                                    sizeof ts, ts, sizeof ts[0],
                                    VK_QUERY_RESULT_64_BIT) == VK_SUCCESS) {
      uint64_t mask = s->props.limits.timestampComputeAndGraphics ? ~0ull : 0;
      s->gpu_ms += (double)((ts[1] - ts[0]) & mask) *
                   s->props.limits.timestampPeriod * 1e-6;
    }
  }
  return TQ_OK;
}

static tq_status wait_all(vk_state *s, char *err, size_t errn) {
  for (int i = 0; i < RING; i++) {
    tq_status st = finish_slot(s, i, err, errn);
    if (st) return st;
  }
  return TQ_OK;
}

/* Begins recording in the next ring slot (waiting for it if needed), with a
 * barrier that orders it after everything submitted before. */
static tq_status begin(vk_state *s, int *slot, char *err, size_t errn) {
  int i = s->next;
  tq_status st = finish_slot(s, i, err, errn);
  if (st) return st;
  s->next = (i + 1) % RING;
  VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  if ((st = vk_check(s->vk.vkResetCommandBuffer(s->cb[i], 0),
                     "vkResetCommandBuffer", err, errn)) ||
      (st = vk_check(s->vk.vkBeginCommandBuffer(s->cb[i], &bi),
                     "vkBeginCommandBuffer", err, errn)))
    return st;
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT |
                                         VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT |
                                         VK_ACCESS_SHADER_WRITE_BIT |
                                         VK_ACCESS_TRANSFER_READ_BIT |
                                         VK_ACCESS_TRANSFER_WRITE_BIT};
  s->vk.vkCmdPipelineBarrier(
      s->cb[i],
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0,
      1, &mb, 0, NULL, 0, NULL);
  if (s->queries) {
    s->vk.vkCmdResetQueryPool(s->cb[i], s->queries, (uint32_t)(2 * i), 2);
    s->vk.vkCmdWriteTimestamp(s->cb[i], VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT,
                              s->queries, (uint32_t)(2 * i));
  }
  *slot = i;
  return TQ_OK;
}

static tq_status submit(vk_state *s, int i, char *err, size_t errn) {
  if (s->queries)
    s->vk.vkCmdWriteTimestamp(s->cb[i], VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                              s->queries, (uint32_t)(2 * i + 1));
  tq_status st = vk_check(s->vk.vkEndCommandBuffer(s->cb[i]),
                          "vkEndCommandBuffer", err, errn);
  if (st) return st;
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                     .commandBufferCount = 1,
                     .pCommandBuffers = &s->cb[i]};
  if ((st = vk_check(s->vk.vkResetFences(s->dev, 1, &s->fence[i]),
                     "vkResetFences", err, errn)) ||
      (st = vk_check(s->vk.vkQueueSubmit(s->queue, 1, &si, s->fence[i]),
                     "vkQueueSubmit", err, errn)))
    return st;
  s->busy[i] = 1;
  return TQ_OK;
}

/* ---- pipeline cache on disk --------------------------------------------- */
/* The cache data is accepted only when its header names this device and
 * driver: a file from another GPU, or a corrupt one, is ignored. */
static void pcache_open(vk_state *s) {
  char dir[1024];
  void *data = NULL;
  size_t size = 0;
  if (tq_cache_dir(dir, sizeof dir))
    snprintf(s->pcache_path, sizeof s->pcache_path,
             "%s/vulkan/pipelines-%08x-%08x-%08x.bin", dir, s->props.vendorID,
             s->props.deviceID, s->props.driverVersion);
  FILE *f = *s->pcache_path ? fopen(s->pcache_path, "rb") : NULL;
  if (f) {
    long len = -1;
    if (!fseek(f, 0, SEEK_END)) len = ftell(f);
    if (len >= 32 && len < (256l << 20) && !fseek(f, 0, SEEK_SET) &&
        (data = malloc((size_t)len)) &&
        fread(data, 1, (size_t)len, f) == (size_t)len) {
      uint32_t h[4];
      memcpy(h, data, sizeof h);
      if (h[0] >= 32 && h[1] == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
          h[2] == s->props.vendorID && h[3] == s->props.deviceID &&
          !memcmp((char *)data + 16, s->props.pipelineCacheUUID, VK_UUID_SIZE))
        size = (size_t)len;
    }
    fclose(f);
  }
  VkPipelineCacheCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
      .initialDataSize = size,
      .pInitialData = size ? data : NULL};
  if (s->vk.vkCreatePipelineCache(s->dev, &ci, NULL, &s->pcache) !=
      VK_SUCCESS) {
    ci.initialDataSize = 0;
    ci.pInitialData = NULL;
    if (s->vk.vkCreatePipelineCache(s->dev, &ci, NULL, &s->pcache) !=
        VK_SUCCESS)
      s->pcache = VK_NULL_HANDLE;
  }
  free(data);
}

/* Written through a temporary file and a rename, like the JIT cache. */
static void pcache_save(vk_state *s) {
  size_t size = 0;
  if (!s->pcache || !*s->pcache_path ||
      s->vk.vkGetPipelineCacheData(s->dev, s->pcache, &size, NULL) !=
          VK_SUCCESS ||
      !size)
    return;
  void *data = malloc(size);
  if (!data) return;
  char err[1600]; /* best effort: the next run rebuilds what is missing */
  if (s->vk.vkGetPipelineCacheData(s->dev, s->pcache, &size, data) == VK_SUCCESS)
    tq_file_replace(s->pcache_path, NULL, 0, data, size, err, sizeof err);
  free(data);
}

/* ---- open / close ------------------------------------------------------- */
static void vk_close(void *state) {
  vk_state *s = state;
  if (!s) return;
  if (s->dev) {
    char err[256];
    wait_all(s, err, sizeof err);
    s->vk.vkDeviceWaitIdle(s->dev);
    pcache_save(s);
    if (s->pcache) s->vk.vkDestroyPipelineCache(s->dev, s->pcache, NULL);
    buf_free(s, s->dummy);
    buf_free(s, s->staging);
    if (s->queries) s->vk.vkDestroyQueryPool(s->dev, s->queries, NULL);
    for (int i = 0; i < RING; i++)
      if (s->fence[i]) s->vk.vkDestroyFence(s->dev, s->fence[i], NULL);
    if (s->cmd_pool) s->vk.vkDestroyCommandPool(s->dev, s->cmd_pool, NULL);
    if (s->pool) s->vk.vkDestroyDescriptorPool(s->dev, s->pool, NULL);
    if (s->layout) s->vk.vkDestroyPipelineLayout(s->dev, s->layout, NULL);
    if (s->set_layout)
      s->vk.vkDestroyDescriptorSetLayout(s->dev, s->set_layout, NULL);
    s->vk.vkDestroyDevice(s->dev, NULL);
  }
  if (s->inst) vkDestroyInstance(s->inst, NULL);
  free(s);
}

static tq_status make_device(vk_state *s, char *err, size_t errn) {
  uint32_t nq = 0;
  VkQueueFamilyProperties qf[16];
  vkGetPhysicalDeviceQueueFamilyProperties(s->phys, &nq, NULL);
  if (nq > 16) nq = 16;
  vkGetPhysicalDeviceQueueFamilyProperties(s->phys, &nq, qf);
  int fam = -1;
  for (uint32_t i = 0; i < nq && fam < 0; i++)
    if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) fam = (int)i;
  if (fam < 0) {
    snprintf(err, errn, "%s has no compute queue", s->props.deviceName);
    return TQ_ERR_UNAVAILABLE;
  }
  s->family = (uint32_t)fam;
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
      .queueFamilyIndex = s->family,
      .queueCount = 1,
      .pQueuePriorities = &prio};
  VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                           .queueCreateInfoCount = 1,
                           .pQueueCreateInfos = &qi};
  tq_status st = vk_check(vkCreateDevice(s->phys, &di, NULL, &s->dev),
                          "vkCreateDevice", err, errn);
  if (st) return st;
  volkLoadDeviceTable(&s->vk, s->dev);
  s->vk.vkGetDeviceQueue(s->dev, s->family, 0, &s->queue);
  if (qf[fam].timestampValidBits > 0 && s->props.limits.timestampPeriod > 0) {
    VkQueryPoolCreateInfo qpi = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = 2 * RING};
    if (s->vk.vkCreateQueryPool(s->dev, &qpi, NULL, &s->queries) != VK_SUCCESS)
      s->queries = VK_NULL_HANDLE;
  }
  return TQ_OK;
}

/* One descriptor set layout and pipeline layout serve every stage. */
static tq_status make_layouts(vk_state *s, char *err, size_t errn) {
  VkDescriptorSetLayoutBinding b[TQG_VK_BINDINGS];
  for (int i = 0; i < TQG_VK_BINDINGS; i++)
    b[i] = (VkDescriptorSetLayoutBinding){
        .binding = (uint32_t)i,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo li = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
      .bindingCount = TQG_VK_BINDINGS,
      .pBindings = b};
  tq_status st = vk_check(
      s->vk.vkCreateDescriptorSetLayout(s->dev, &li, NULL, &s->set_layout),
      "vkCreateDescriptorSetLayout", err, errn);
  if (st) return st;
  VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
                            .size = TQG_VK_PUSH_BYTES};
  VkPipelineLayoutCreateInfo pi = {
      .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
      .setLayoutCount = 1,
      .pSetLayouts = &s->set_layout,
      .pushConstantRangeCount = 1,
      .pPushConstantRanges = &pr};
  if ((st =
           vk_check(s->vk.vkCreatePipelineLayout(s->dev, &pi, NULL, &s->layout),
                    "vkCreatePipelineLayout", err, errn)))
    return st;
  VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                             POOL_SETS * TQG_VK_BINDINGS};
  VkDescriptorPoolCreateInfo dp = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
      .maxSets = POOL_SETS,
      .poolSizeCount = 1,
      .pPoolSizes = &ps};
  if ((st = vk_check(s->vk.vkCreateDescriptorPool(s->dev, &dp, NULL, &s->pool),
                     "vkCreateDescriptorPool", err, errn)))
    return st;
  VkCommandPoolCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
      .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
      .queueFamilyIndex = s->family};
  if ((st = vk_check(s->vk.vkCreateCommandPool(s->dev, &ci, NULL, &s->cmd_pool),
                     "vkCreateCommandPool", err, errn)))
    return st;
  VkCommandBufferAllocateInfo ai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = s->cmd_pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = RING};
  if ((st = vk_check(s->vk.vkAllocateCommandBuffers(s->dev, &ai, s->cb),
                     "vkAllocateCommandBuffers", err, errn)))
    return st;
  for (int i = 0; i < RING && !st; i++) {
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    st = vk_check(s->vk.vkCreateFence(s->dev, &fi, NULL, &s->fence[i]),
                  "vkCreateFence", err, errn);
  }
  return st;
}

static tq_status vk_open(void **state, char *err, size_t errn) {
  *state = NULL;
  tq_status st = vk_probe(err, errn);
  if (st) return st;
  vk_state *s = calloc(1, sizeof *s);
  if (!s) return TQ_ERR_NOMEM;
  VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                           .pApplicationName = "tqgen",
                           .pEngineName = "tqgen",
                           .apiVersion = VK_API_VERSION_1_1};
  VkInstanceCreateInfo ii = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                             .pApplicationInfo = &app};
  VkResult r = vkCreateInstance(&ii, NULL, &s->inst);
  if (r != VK_SUCCESS) {
    snprintf(
        err, errn,
        "vulkan backend unavailable: vkCreateInstance: %s (%d); is a Vulkan "
        "driver installed?",
        vk_result(r), (int)r);
    free(s);
    return TQ_ERR_UNAVAILABLE;
  }
  volkLoadInstanceOnly(s->inst);
  st = pick_device(s, err, errn);
  if (!st) {
    probe_features(s);
    st = pick_memory(s, err, errn);
  }
  if (!st) st = make_device(s, err, errn);
  if (!st) st = make_layouts(s, err, errn);
  if (!st)
    st = buf_new(s, 256, s->mem_device, s->unified, &s->dummy, err, errn);
  if (st) {
    vk_close(s);
    return st;
  }
  pcache_open(s);
  /* GPUs: enough workgroups to fill a large device (132 SMs x 16);
   * CPUs (lavapipe): a few per core is plenty. */
  s->target_groups =
      s->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 16 : 2112;
  if (s->fast_sg)
    snprintf(s->target, sizeof s->target, "sg-f%d", s->fast_sg);
  else
    snprintf(s->target, sizeof s->target, "%s", s->subgroups ? "sg" : "base");
  *state = s;
  return TQ_OK;
}

/* The JIT cache keeps SPIR-V with and without subgroup operations, and
 * with the fast stage of each subgroup size, apart. */
static const char *vk_target(void *state) {
  return ((vk_state *)state)->target;
}

/* ---- modules ------------------------------------------------------------ */
static tq_status vk_emit(const tq_variant *v, tqg_source *out, char *err,
                         size_t errn) {
  return tqg_emit_vulkan(v, "jit", out, err, errn);
}

static tq_status vk_compile(void *state, const tq_variant *v,
                            const tqg_source *src, void **binary, size_t *size,
                            char *err, size_t errn) {
  vk_state *s = state;
  char name[160], file[200];
  tqg_variant_name(v, name, sizeof name);
  snprintf(file, sizeof file, "vulkan/%s.comp", name);
  return tqg_vk_build(v, src, file, s->subgroups, s->fast_sg, binary, size,
                      err, errn);
}

static void vk_unload(void *state, void *module) {
  vk_state *s = state;
  vk_module *m = module;
  if (!m) return;
  char err[256];
  wait_all(s, err, sizeof err);
  for (int i = 0; i < m->n; i++)
    if (m->pipe[i].pipe) s->vk.vkDestroyPipeline(s->dev, m->pipe[i].pipe, NULL);
  buf_free(s, m->tables);
  free(m);
}

static int find_stage(const vk_module *m, const char *name) {
  for (int i = 0; i < m->n; i++)
    if (!strcmp(m->pipe[i].stage, name)) return i;
  return -1;
}

static tq_status upload(vk_state *s, vk_buf *dst, size_t off, const void *src,
                        size_t n, char *err, size_t errn);

/* How well a build of a stage suits this device, from its name's suffix:
 * the fast attend stage of this subgroup size (3), with subgroups (2),
 * plain (1), or not runnable here (0). */
static int stage_rank(const vk_state *s, const char *stage) {
  const char *suffix = stage + strcspn(stage, ".");
  if (!*suffix) return 1;
  if (!strcmp(suffix, ".sg")) return s->subgroups ? 2 : 0;
  if (!strncmp(suffix, ".f", 2))
    return s->fast_sg && atoi(suffix + 2) == s->fast_sg ? 3 : 0;
  return 0;
}

/* Pipelines of the stages this device will run, and the table buffer. */
static tq_status load_shaders(vk_state *s, const tq_variant *v,
                              const tqg_vk_shader *sh, int n,
                              const float *tables, size_t table_floats,
                              void **module, char *err, size_t errn) {
  *module = NULL;
  vk_module *m = calloc(1, sizeof *m);
  if (!m) return TQ_ERR_NOMEM;
  m->variant = *v;
  tq_status st = TQ_OK;
  for (int i = 0; i < n && !st; i++) {
    /* Of the builds of a stage, the best this device runs: "attend.f<n>"
     * (the fast stage, subgroups of exactly n), "attend.sg" (subgroup
     * arithmetic), then plain "attend", the fallback of any device. */
    size_t base = strcspn(sh[i].stage, ".");
    int rank = stage_rank(s, sh[i].stage), better = 0;
    for (int j = 0; j < n; j++)
      better |= strcspn(sh[j].stage, ".") == base &&
                !strncmp(sh[j].stage, sh[i].stage, base) &&
                stage_rank(s, sh[j].stage) > rank;
    if (!rank || better) continue;
    if (m->n == TQG_VK_MAX_STAGES) break;
    uint32_t wg = rank == 3 ? (uint32_t)(TQG_VK_FAST_WORKERS * s->fast_sg)
                            : TQG_VK_WORKGROUP;
    if (sh[i].workgroup[0] != wg || sh[i].push_bytes != TQG_VK_PUSH_BYTES) {
      snprintf(
          err, errn,
          "stage %s: workgroup %u and %u push-constant bytes; this runtime "
          "launches %u and %u",
          sh[i].stage, sh[i].workgroup[0], sh[i].push_bytes, wg,
          TQG_VK_PUSH_BYTES);
      st = TQ_ERR_INVALID;
      break;
    }
    VkShaderModuleCreateInfo smi = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = sh[i].code_bytes,
        .pCode = sh[i].code};
    VkShaderModule sm;
    char what[96];
    snprintf(what, sizeof what, "vkCreateShaderModule (%s)", sh[i].stage);
    if ((st = vk_check(s->vk.vkCreateShaderModule(s->dev, &smi, NULL, &sm),
                       what, err, errn)))
      break;
    VkComputePipelineCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = sm,
                  .pName = "main"},
        .layout = s->layout};
    vk_pipe *p = &m->pipe[m->n];
    snprintf(p->stage, sizeof p->stage, "%.*s", (int)base, sh[i].stage);
    p->bindings = sh[i].bindings;
    snprintf(what, sizeof what, "vkCreateComputePipelines (%s)", sh[i].stage);
    st = vk_check(s->vk.vkCreateComputePipelines(s->dev, s->pcache, 1, &pci,
                                                 NULL, &p->pipe),
                  what, err, errn);
    s->vk.vkDestroyShaderModule(s->dev, sm, NULL);
    if (!st && !strcmp(p->stage, "attend")) m->attend_rank = rank;
    if (!st) m->n++;
  }
  m->encode = find_stage(m, "encode");
  m->attend = find_stage(m, "attend");
  /* A fallback is what runs where the device or the module lacks a better
   * stage for this variant. */
  if (m->attend_rank == 3)
    snprintf(m->attend_path, sizeof m->attend_path,
             "fast attend, subgroups of %d", s->fast_sg);
  else if (m->attend_rank == 2 && tqg_vk_fast(v))
    snprintf(m->attend_path, sizeof m->attend_path,
             "fallback: attend with subgroups, no fast stage for %s",
             s->fast_sg ? "this subgroup size in the module" : "this device");
  else if (m->attend_rank == 2)
    snprintf(m->attend_path, sizeof m->attend_path, "attend with subgroups");
  else
    snprintf(m->attend_path, sizeof m->attend_path,
             "fallback: attend without subgroups");
  m->reduce = find_stage(m, "reduce");
  m->dequant = find_stage(m, "dequant");
  if (!st &&
      (m->encode < 0 || m->attend < 0 || m->reduce < 0 || m->dequant < 0)) {
    snprintf(err, errn,
             "the module lacks a stage this device can run (encode, attend%s, "
             "reduce, "
             "dequant)",
             s->subgroups ? "" : " without subgroups");
    st = TQ_ERR_INVALID;
  }
  if (!st && !table_floats) {
    snprintf(err, errn, "the module has no constant tables");
    st = TQ_ERR_INVALID;
  }
  if (!st)
    st = buf_new(s, 4 * table_floats, s->mem_device, s->unified, &m->tables,
                 err, errn);
  if (!st) st = upload(s, m->tables, 0, tables, 4 * table_floats, err, errn);
  if (st) {
    vk_unload(s, m);
    return st;
  }
  *module = m;
  return TQ_OK;
}

static tq_status vk_load(void *state, const tq_variant *v, const void *binary,
                         size_t size, void **module, char *err, size_t errn) {
  tqg_vk_image img;
  tq_status st = tqg_vk_parse(binary, size, &img, err, errn);
  if (st) return st;
  return load_shaders(state, v, img.shader, img.n, img.tables, img.table_floats,
                      module, err, errn);
}

/* AOT: the entry's shaders are the stages; its binary is the f32 tables. */
static tq_status vk_load_aot(void *state, const tq_dispatch_entry *e,
                             void **module, char *err, size_t errn) {
  if (!e->shaders || e->shader_count < 1 ||
      e->shader_count > TQG_VK_MAX_STAGES || !e->binary || !e->binary_size ||
      e->binary_size % 4) {
    snprintf(err, errn, "dispatch entry %s has no Vulkan shaders or tables",
             e->name);
    return TQ_ERR_INVALID;
  }
  tqg_vk_shader sh[TQG_VK_MAX_STAGES];
  for (int i = 0; i < e->shader_count; i++) {
    const tq_dispatch_shader *d = &e->shaders[i];
    if (!d->stage || !d->code || d->code_size % 4 || (uintptr_t)d->code % 4) {
      snprintf(err, errn, "dispatch entry %s: shader %d is malformed", e->name,
               i);
      return TQ_ERR_INVALID;
    }
    snprintf(sh[i].stage, sizeof sh[i].stage, "%s", d->stage);
    memcpy(sh[i].workgroup, d->workgroup_size, sizeof sh[i].workgroup);
    sh[i].push_bytes = d->push_constant_bytes;
    sh[i].bindings = d->binding_mask;
    sh[i].code = d->code;
    sh[i].code_bytes = d->code_size;
  }
  return load_shaders(state, &e->variant, sh, e->shader_count, e->binary,
                      e->binary_size / 4, module, err, errn);
}

/* ---- memory ------------------------------------------------------------- */
static tq_status vk_alloc(void *state, size_t bytes, void **mem, char *err,
                          size_t errn) {
  vk_state *s = state;
  vk_buf *b;
  /* Storage buffers are bound whole: keep sizes a multiple of 4. */
  tq_status st = buf_new(s, (bytes + 3) & ~(size_t)3, s->mem_device, s->unified,
                         &b, err, errn);
  *mem = st ? NULL : b;
  return st;
}

static void vk_free(void *state, void *mem) {
  vk_state *s = state;
  char err[256];
  if (!mem) return;
  wait_all(s, err, sizeof err); /* no launch in flight may still use it */
  buf_free(s, mem);
}

static tq_status get_staging(vk_state *s, char *err, size_t errn) {
  return s->staging
             ? TQ_OK
             : buf_new(s, STAGING, s->mem_staging, 1, &s->staging, err, errn);
}

/* Device copy between a buffer and the staging buffer, waited for. */
static tq_status staged_copy(vk_state *s, vk_buf *b, size_t off, size_t n,
                             int to_device, char *err, size_t errn) {
  int slot;
  tq_status st = begin(s, &slot, err, errn);
  if (st) return st;
  VkBufferCopy c = {to_device ? 0 : off, to_device ? off : 0, n};
  s->vk.vkCmdCopyBuffer(s->cb[slot], to_device ? s->staging->buf : b->buf,
                        to_device ? b->buf : s->staging->buf, 1, &c);
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
  s->vk.vkCmdPipelineBarrier(s->cb[slot], VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0,
                             NULL);
  if (!(st = submit(s, slot, err, errn))) st = finish_slot(s, slot, err, errn);
  return st;
}

static tq_status upload(vk_state *s, vk_buf *b, size_t off, const void *src,
                        size_t n, char *err, size_t errn) {
  tq_status st = wait_all(s, err, errn);
  if (st || !n) return st;
  if (b->map) {
    memcpy((char *)b->map + off, src, n);
    return TQ_OK;
  }
  if ((st = get_staging(s, err, errn))) return st;
  for (size_t done = 0; done < n && !st; done += STAGING) {
    size_t k = n - done < STAGING ? n - done : STAGING;
    memcpy(s->staging->map, (const char *)src + done, k);
    st = staged_copy(s, b, off + done, k, 1, err, errn);
  }
  return st;
}

static tq_status vk_write(void *state, void *mem, size_t off, const void *src,
                          size_t n, char *err, size_t errn) {
  return upload(state, mem, off, src, n, err, errn);
}

static tq_status vk_read(void *state, const void *mem, size_t off, void *dst,
                         size_t n, char *err, size_t errn) {
  vk_state *s = state;
  vk_buf *b = (vk_buf *)mem;
  tq_status st = wait_all(s, err, errn);
  if (st || !n) return st;
  if (b->map) {
    memcpy(dst, (const char *)b->map + off, n);
    return TQ_OK;
  }
  if ((st = get_staging(s, err, errn))) return st;
  for (size_t done = 0; done < n && !st; done += STAGING) {
    size_t k = n - done < STAGING ? n - done : STAGING;
    if (!(st = staged_copy(s, b, off + done, k, 0, err, errn)))
      memcpy((char *)dst + done, s->staging->map, k);
  }
  return st;
}

static void *vk_host_ptr(void *state, void *mem) {
  (void)state;
  return mem ? ((vk_buf *)mem)->map : NULL;
}

/* ---- the launch plan ---------------------------------------------------- */
static int capacity(const tq_variant *v, const tq_kargs *a) {
  return v->layout == TQ_PAGED ? a->max_blocks * v->block_size : a->capacity;
}

static int row_tiles(const tq_variant *v, const tq_kargs *a) {
  int rq = tqg_vk_rows_per_group(v);
  return (a->n_tokens * v->group + rq - 1) / rq;
}

/* Context splits of decode/prefill: enough workgroups to fill the device,
 * at least MIN_SLICE tokens each. */
static int splits(const vk_state *s, const tq_variant *v, const tq_kargs *a) {
  long base = (long)a->batch * a->kv_heads * row_tiles(v, a);
  long n = (s->target_groups + base - 1) / base;
  long by_len = (capacity(v, a) + MIN_SLICE - 1) / MIN_SLICE;
  if (n > by_len) n = by_len;
  if (n > MAX_SPLITS) n = MAX_SPLITS;
  return n < 1 ? 1 : (int)n;
}

static size_t vk_workspace(void *state, void *module, tq_op op,
                           const tq_kargs *a) {
  vk_module *m = module;
  const tq_variant *v = &m->variant;
  if (op != TQ_OP_DECODE && op != TQ_OP_PREFILL) return 0;
  int vdim = v->head_dim; /* accumulated channels: main + outliers, or all */
  return sizeof(float) * (size_t)a->batch * a->kv_heads * (size_t)a->n_tokens *
         v->group * (size_t)splits(state, v, a) * (size_t)(2 + vdim);
}

typedef struct push {
  int32_t batch, kv_heads, n_tokens, capacity, num_blocks, max_blocks;
  float sm_scale;
  int32_t splits, has_perm;
} push;

static void dispatch(vk_state *s, VkCommandBuffer cb, const vk_module *m,
                     int stage, VkDescriptorSet set, const push *pc, uint32_t x,
                     uint32_t y, uint32_t z) {
  s->vk.vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE,
                          m->pipe[stage].pipe);
  s->vk.vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, s->layout,
                                0, 1, &set, 0, NULL);
  s->vk.vkCmdPushConstants(cb, s->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                           sizeof *pc, pc);
  s->vk.vkCmdDispatch(cb, x, y, z);
}

static tq_status vk_launch(void *state, void *module, tq_op op,
                           const tq_kargs *a, char *err, size_t errn) {
  vk_state *s = state;
  vk_module *m = module;
  const tq_variant *v = &m->variant;
  size_t need = vk_workspace(s, m, op, a);
  if (need > a->workspace_bytes || (need && !a->workspace)) {
    snprintf(
        err, errn,
        "needs %zu bytes of workspace, got %zu: pass a workspace buffer of "
        "tq_workspace_size() bytes",
        need, a->workspace ? a->workspace_bytes : 0);
    return TQ_ERR_INVALID;
  }
  int attention = op == TQ_OP_DECODE || op == TQ_OP_PREFILL;
  int stage = op == TQ_OP_ENCODE    ? m->encode
              : op == TQ_OP_DEQUANT ? m->dequant
                                    : m->attend;
  int rows = a->n_tokens * v->group, tiles = row_tiles(v, a);
  uint32_t limit = s->props.limits.maxComputeWorkGroupCount[1];
  if ((uint32_t)a->n_tokens > s->props.limits.maxComputeWorkGroupCount[0] ||
      (uint32_t)rows > s->props.limits.maxComputeWorkGroupCount[0] ||
      (uint32_t)(a->kv_heads * (attention ? tiles : 1)) > limit ||
      (uint32_t)a->batch > s->props.limits.maxComputeWorkGroupCount[2]) {
    snprintf(err, errn,
             "batch %d, kv_heads %d, n_tokens %d exceed %s's workgroup counts",
             a->batch, a->kv_heads, a->n_tokens, s->props.deviceName);
    return TQ_ERR_INVALID;
  }
  /* Bindings in template order; missing ones get a small dummy buffer. */
  void *bufs[TQG_VK_BINDINGS] = {a->k_cache,
                                 a->v_cache,
                                 (void *)a->block_table,
                                 (void *)a->seq_lens,
                                 (void *)a->channel_perm,
                                 (void *)a->q,
                                 a->k,
                                 a->v,
                                 a->out,
                                 a->workspace,
                                 m->tables};
  static const char *const names[TQG_VK_BINDINGS] = {
      "k_cache", "v_cache", "block_table", "seq_lens",  "channel_perm", "q",
      "k",       "v",       "out",         "workspace", "tables"};
  uint32_t used =
      m->pipe[stage].bindings | (attention ? m->pipe[m->reduce].bindings : 0);
  VkDescriptorBufferInfo info[TQG_VK_BINDINGS];
  VkWriteDescriptorSet w[TQG_VK_BINDINGS];
  for (int i = 0; i < TQG_VK_BINDINGS; i++) {
    vk_buf *b = bufs[i] ? bufs[i] : s->dummy;
    int optional = i == 4 || (i == 2 && v->layout != TQ_PAGED);
    if (!bufs[i] && (used >> i & 1) && !optional) {
      snprintf(err, errn, "buffer %s is missing", names[i]);
      return TQ_ERR_INVALID;
    }
    if (b->size > s->props.limits.maxStorageBufferRange) {
      snprintf(err, errn, "buffer %s holds %llu bytes; %s binds at most %u",
               names[i], (unsigned long long)b->size, s->props.deviceName,
               s->props.limits.maxStorageBufferRange);
      return TQ_ERR_INVALID;
    }
    info[i] = (VkDescriptorBufferInfo){b->buf, 0, VK_WHOLE_SIZE};
    w[i] = (VkWriteDescriptorSet){
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstBinding = (uint32_t)i,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &info[i]};
  }
  VkDescriptorSetAllocateInfo ai = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
      .descriptorPool = s->pool,
      .descriptorSetCount = 1,
      .pSetLayouts = &s->set_layout};
  VkDescriptorSet set;
  VkResult r = s->vk.vkAllocateDescriptorSets(s->dev, &ai, &set);
  if (r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) {
    /* The pool is spent: once nothing in flight uses its sets, recycle. */
    tq_status st = wait_all(s, err, errn);
    if (st) return st;
    s->vk.vkResetDescriptorPool(s->dev, s->pool, 0);
    r = s->vk.vkAllocateDescriptorSets(s->dev, &ai, &set);
  }
  tq_status st = vk_check(r, "vkAllocateDescriptorSets", err, errn);
  if (st) return st;
  for (int i = 0; i < TQG_VK_BINDINGS; i++) w[i].dstSet = set;
  s->vk.vkUpdateDescriptorSets(s->dev, TQG_VK_BINDINGS, w, 0, NULL);

  push pc = {a->batch,
             a->kv_heads,
             a->n_tokens,
             a->capacity,
             a->num_blocks,
             a->max_blocks,
             a->sm_scale,
             attention ? splits(s, v, a) : 0,
             a->channel_perm != NULL};
  int slot;
  if ((st = begin(s, &slot, err, errn))) return st;
  VkCommandBuffer cb = s->cb[slot];
  if (!attention) {
    dispatch(s, cb, m, stage, set, &pc, (uint32_t)a->n_tokens,
             (uint32_t)a->kv_heads, (uint32_t)a->batch);
  } else {
    dispatch(s, cb, m, stage, set, &pc, (uint32_t)pc.splits,
             (uint32_t)(a->kv_heads * tiles), (uint32_t)a->batch);
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT};
    s->vk.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                               VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb,
                               0, NULL, 0, NULL);
    dispatch(s, cb, m, m->reduce, set, &pc, (uint32_t)rows,
             (uint32_t)a->kv_heads, (uint32_t)a->batch);
  }
  /* Results become visible to host reads (unified memory) once the fence
   * signals. */
  VkMemoryBarrier hb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
  s->vk.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                             VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &hb, 0, NULL, 0,
                             NULL);
  return submit(s, slot, err, errn);
}

static tq_status vk_sync(void *state, char *err, size_t errn) {
  return wait_all(state, err, errn);
}

/* Decode and prefill run one of several attend builds; the others have
 * one. */
static const char *vk_path(void *state, void *module, tq_op op) {
  (void)state;
  const vk_module *m = module;
  return op == TQ_OP_DECODE || op == TQ_OP_PREFILL ? m->attend_path : NULL;
}

/* ---- extras for benchmarks and reports ---------------------------------- */
tq_status tq_vulkan_gpu_ms(tq_backend *be, double *ms) {
  *ms = 0;
  if (!be || strcmp(be->ops->name, "vulkan")) return TQ_ERR_INVALID;
  vk_state *s = be->state;
  char err[256];
  tq_status st = wait_all(s, err, sizeof err);
  if (st) return tq_fail(be, st, "vulkan backend: %s", err);
  if (!s->queries)
    return tq_fail(be, TQ_ERR_UNAVAILABLE, "%s has no compute timestamps",
                   s->props.deviceName);
  *ms = s->gpu_ms;
  s->gpu_ms = 0;
  return TQ_OK;
}

const char *tq_vulkan_describe(tq_backend *be) {
  static _Thread_local char text[768];
  if (!be || strcmp(be->ops->name, "vulkan")) return "";
  vk_state *s = be->state;
  snprintf(
      text, sizeof text, "%s (Vulkan %u.%u.%u, driver %08x); %s; memory %s",
      s->props.deviceName, VK_API_VERSION_MAJOR(s->props.apiVersion),
      VK_API_VERSION_MINOR(s->props.apiVersion),
      VK_API_VERSION_PATCH(s->props.apiVersion), s->props.driverVersion,
      s->features, s->unified ? "mapped (unified)" : "device-local + staging");
  return text;
}

int tq_vulkan_subgroups(tq_backend *be) {
  if (!be || strcmp(be->ops->name, "vulkan")) return 0;
  return ((vk_state *)be->state)->subgroups;
}

int tq_vulkan_fast_sg(tq_backend *be) {
  if (!be || strcmp(be->ops->name, "vulkan")) return 0;
  return ((vk_state *)be->state)->fast_sg;
}

const tq_backend_ops tq_backend_vulkan = {
    .name = "vulkan",
    .binary_kind = "spirv",
    .target = vk_target,
    .probe = vk_probe,
    .open = vk_open,
    .close = vk_close,
    .emit = vk_emit,
    .compile = vk_compile,
    .load = vk_load,
    .load_aot = vk_load_aot,
    .unload = vk_unload,
    .alloc = vk_alloc,
    .free = vk_free,
    .write = vk_write,
    .read = vk_read,
    .host_ptr = vk_host_ptr,
    .workspace = vk_workspace,
    .launch = vk_launch,
    .sync = vk_sync,
    .path = vk_path,
};
