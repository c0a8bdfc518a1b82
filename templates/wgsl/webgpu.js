// ---- templates/wgsl/webgpu.js: the runtime part of every generated module.
// Mirrors backends/wgsl.c and backends/wgsl_plan.c (bind group layouts,
// launch plan, uniform block, the choice of attend_fast) so a web engine
// records exactly the dispatches the native runtime does; ctest wgsl_js
// compares plan() with the native plan.

/** Binding i of group 0, by the tq_kargs field it carries. */
export const BINDINGS = ["params", "tables", "k_cache", "v_cache", "block_table",
  "seq_lens", "channel_perm", "q", "k", "v", "out", "workspace"];
const BINDING_TYPES = ["uniform", "read-only-storage", "storage", "storage",
  "read-only-storage", "read-only-storage", "read-only-storage",
  "read-only-storage", "storage", "storage", "storage", "storage"];
const OPS = ["encode", "decode", "prefill", "dequant"];
const TARGET_WORKGROUPS = {{TARGET_WORKGROUPS}};
const MAX_SPLITS = {{MAX_SPLITS}};
const MIN_SLICE = {{MIN_SLICE}};
const OFFSET_ALIGN = {{OFFSET_ALIGN}}; // storage binding offsets: multiples of this
const MAX_GRID = 65535; // workgroups along each axis of a dispatch
const PARAMS_WORDS = 12 + BINDINGS.length; // the uniform block: 12 words, then seq0
const FAST_SIZES = [{{FAST_SIZES}}]; // subgroup sizes attend_fast serves

/** Layout entries of one stage ("encode", "decode", "prefill", "reduce",
 * "dequant", "attend_fast") of a variant and flavour. */
export function bindGroupLayoutEntries(name, flavour, stage) {
  const s = variants[name].flavours[flavour].stages[stage];
  return s.bindings.map((b) => ({
    binding: b,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: BINDING_TYPES[b] },
  }));
}

function decodeTables(b64) {
  const bytes = typeof atob === "function"
    ? Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
    : new Uint8Array(Buffer.from(b64, "base64"));
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/** What plan() needs of a kernel, without a device: its variant and
 * flavour, the subgroup size attend_fast runs with (0: decode and prefill
 * run their own entries) and the largest storage binding.  options:
 * subgroupSize (the host's, from GPUAdapterInfo.subgroupMinSize and
 * subgroupMaxSize: where they are equal, that size), fast (false: never
 * attend_fast), maxBinding (bytes; default: no limit).  attend_fast runs
 * where the flavour has it and the size is 8, 16 or 32: the native
 * runtime's rule, without its probe (an unknown size gives 0 here, where
 * the native runtime tries 32 and probes). */
export function describeKernel(name, flavour = "core", options = {}) {
  const v = variants[name];
  if (!v) throw new Error(`tqgen: no variant ${name} in family ${family}`);
  const f = v.flavours[flavour];
  if (!f) throw new Error(`tqgen: ${name} has no ${flavour} flavour`);
  const size = options.subgroupSize || 0;
  const fast = !!f.stages.attend_fast && options.fast !== false &&
    FAST_SIZES.includes(size);
  return { name, flavour, variant: v.variant, subgroupSize: fast ? size : 0,
    maxBinding: options.maxBinding || Infinity };
}

/** Compiles a variant's module in one flavour ("core", or "f16sg" on a
 * device created with the "shader-f16" and "subgroups" features) and builds
 * its pipelines and tables buffer; attend_fast's for the subgroup size
 * (options.subgroupSize, else the device's when GPUAdapterInfo reports one
 * fixed size; describeKernel says when it is used).  The largest storage
 * binding is the device's (options.maxBinding may lower it).  Throws with
 * the generated line of the first compilation error. */
export async function createKernel(device, name, flavour = "core", options = {}) {
  const adapter = device.adapterInfo || {};
  const fixed = adapter.subgroupMinSize === adapter.subgroupMaxSize ? adapter.subgroupMinSize : 0;
  const limit = device.limits.maxStorageBufferBindingSize;
  const kernel = describeKernel(name, flavour, { ...options,
    subgroupSize: options.subgroupSize || fixed,
    maxBinding: Math.min(options.maxBinding || limit, limit) });
  const v = variants[name], f = v.flavours[flavour];
  const label = `${name}.${flavour}.wgsl`;
  const module = device.createShaderModule({ code: f.code, label });
  const compiled = await module.getCompilationInfo();
  const bad = compiled.messages.find((m) => m.type === "error");
  if (bad) throw new Error(`tqgen: ${label}:${bad.lineNum}:${bad.linePos}: ${bad.message}`);
  const stages = {};
  for (const [stage, s] of Object.entries(f.stages)) {
    if (stage === "attend_fast" && !kernel.subgroupSize) continue;
    const layout = device.createBindGroupLayout({
      label: `${label} ${stage}`, entries: bindGroupLayoutEntries(name, flavour, stage) });
    const constants = stage === "attend_fast" ? { [s.constant]: kernel.subgroupSize } : {};
    const pipeline = device.createComputePipeline({
      label: `${label} ${stage}`,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: s.entryPoint, constants },
    });
    const workgroupSize = s.workgroupSize || [s.subgroupWorkers * kernel.subgroupSize, 1, 1];
    stages[stage] = { layout, pipeline, bindings: s.bindings, workgroupSize };
  }
  const data = decodeTables(TABLES[v.tables]);
  const tables = device.createBuffer({ label: `${label} tables`,
    size: (data.byteLength + 15) & ~15, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(tables, 0, data);
  const dummy = device.createBuffer({ label: `${label} unused binding`, size: 16,
    usage: GPUBufferUsage.STORAGE });
  return { ...kernel, stages, tables, dummy };
}

function capacityOf(v, args) {
  return v.layout === "paged" ? args.maxBlocks * v.block_size : args.capacity;
}

/** Context splits of decode/prefill (0 for encode and dequant). */
export function splits(kernel, op, args) {
  if (op !== "decode" && op !== "prefill") return 0;
  const v = kernel.variant;
  const rows = args.nTokens * v.group, tiles = Math.ceil(rows / 4);
  const base = args.batch * args.kvHeads * tiles;
  let s = Math.ceil(TARGET_WORKGROUPS / base);
  s = Math.min(s, Math.ceil(capacityOf(v, args) / MIN_SLICE), MAX_SPLITS);
  return Math.max(s, 1);
}

/** Bytes of the workspace buffer decode/prefill need (0 otherwise). */
export function workspaceBytes(kernel, op, args) {
  const v = kernel.variant;
  return 4 * args.batch * args.kvHeads * args.nTokens * v.group *
    splits(kernel, op, args) * (2 + v.head_dim);
}

// Bytes of one sequence's part of the buffer at binding b; 0 for buffers
// bound whole (params, tables, channel_perm, a paged cache's pool).
function seqBytes(kernel, op, args, b) {
  const v = kernel.variant, w = variants[kernel.name];
  const slots = v.layout === "paged" ? 0 : args.kvHeads * args.capacity;
  const act = (v.dtype === "f32" ? 4 : 2) * v.head_dim * args.nTokens * args.kvHeads;
  switch (BINDINGS[b]) {
    case "k_cache": return slots * w.keySlotBytes;
    case "v_cache": return slots * w.valueSlotBytes;
    case "block_table": return v.layout === "paged" ? 4 * args.maxBlocks : 0;
    case "seq_lens": return 4;
    case "q": case "out": return act * v.group;
    case "k": case "v": return act;
    case "workspace": return workspaceBytes(kernel, op, args) / args.batch;
    default: return 0;
  }
}

// Bytes of one element of the buffer at binding b (what seq0 counts).
function elemBytes(v, b) {
  return ["q", "out", "k", "v"].includes(BINDINGS[b]) && v.dtype !== "f32" ? 2 : 4;
}

// The most bytes a window can start before its first sequence.
function lead(stride) {
  let g = 1;
  while (g < OFFSET_ALIGN && stride % (2 * g) === 0) g *= 2;
  return g >= OFFSET_ALIGN ? 0 : OFFSET_ALIGN - g;
}

function mostPerPart(kernel, op, args, used) {
  let n = Math.min(args.batch, MAX_GRID);
  for (const b of used) {
    const s = seqBytes(kernel, op, args, b), pad = lead(s);
    if (!s) continue;
    if (s + pad > kernel.maxBinding)
      throw new Error(`${BINDINGS[b]}: one sequence takes ${s} bytes of it (${s + pad} ` +
        "with a binding offset's alignment), past this device's largest storage " +
        `binding (${kernel.maxBinding} bytes); a launch splits its batch, never a ` +
        "sequence: use a smaller capacity or fewer kv heads");
    n = Math.min(n, Math.floor((kernel.maxBinding - pad) / s));
  }
  return n;
}

/** The part of a launch that starts at sequence `first`: sequences first
 * .. first + n - 1, as a launch of its own that binds a window of every
 * buffer indexed by sequence (backends/wgsl_plan.h).  Returns { first,
 * params (the uniform block), offset and size (what binding b sees of its
 * buffer: size 0, all of it), steps ([{ stage, grid }]) }. */
export function planPart(kernel, op, args, first) {
  const v = kernel.variant;
  if (!OPS.includes(op)) throw new Error(`tqgen: unknown op ${op}`);
  const stageList = op === "encode" || op === "dequant" ? [op]
    : [kernel.subgroupSize ? "attend_fast" : op, "reduce"];
  const all = variants[kernel.name].flavours[kernel.flavour].stages;
  const used = [...new Set(stageList.flatMap((s) => all[s].bindings))].sort((a, b) => a - b);
  const most = mostPerPart(kernel, op, args, used);
  const parts = Math.ceil(args.batch / most);
  const n = Math.min(Math.ceil(args.batch / parts), args.batch - first);
  const rows = args.nTokens * v.group, tiles = Math.ceil(rows / 4);
  const s = splits(kernel, op, args);
  const params = new ArrayBuffer(4 * PARAMS_WORDS);
  const u = new Uint32Array(params), f = new Float32Array(params);
  u.set([n, args.kvHeads, args.nTokens, args.capacity || 0, args.numBlocks || 0,
    args.maxBlocks || 0]);
  f[6] = args.smScale || 1 / Math.sqrt(v.head_dim);
  u.set([s, args.hasPerm ? 1 : 0, rows, tiles, 0], 7);
  const grids = stageList.length === 1 ? [[args.nTokens, args.kvHeads, n]]
    : [[s, args.kvHeads * tiles, n], [rows, args.kvHeads, n]];
  const steps = stageList.map((stage, i) => {
    if (grids[i].some((g) => g < 1 || g > MAX_GRID))
      throw new Error(`${stage}: grid (${grids[i].join(", ")}) is outside 1..${MAX_GRID}`);
    return { stage, grid: grids[i] };
  });
  const offset = BINDINGS.map(() => 0), size = BINDINGS.map(() => 0);
  for (const b of used) {
    const stride = seqBytes(kernel, op, args, b), at = first * stride;
    if (!stride) continue;
    offset[b] = at - at % OFFSET_ALIGN;
    size[b] = at % OFFSET_ALIGN + n * stride;
    u[12 + b] = (at % OFFSET_ALIGN) / elemBytes(v, b);
  }
  return { first, params, offset, size, steps };
}

/** The parts of one op (one where every buffer fits a binding), as
 * planPart.  args: batch, kvHeads, nTokens, capacity (contiguous) or
 * numBlocks and maxBlocks (paged), smScale (default 1/sqrt(head_dim)),
 * hasPerm.  Throws where one sequence does not fit a binding. */
export function plan(kernel, op, args) {
  const parts = [];
  for (let first = 0; first < args.batch;) {
    const part = planPart(kernel, op, args, first);
    parts.push(part);
    first += new Uint32Array(part.params)[0]; // its batch
  }
  return parts;
}

// Why a buffer a launch binds whole must fit one binding.
function wholeWhy(v, name) {
  return (name === "k_cache" || name === "v_cache") && v.layout === "paged"
    ? "a paged cache's pool is bound whole, since any sequence's blocks may lie " +
      "anywhere in it: use a smaller pool"
    : "it is bound whole";
}

/** Records op into a command encoder.  buffers: GPUBuffers named as
 * BINDINGS (k_cache, v_cache, seq_lens, q, out, workspace, ...);
 * block_table and channel_perm may be omitted (identity order).  The
 * caches are packed slots (docs/FORMAT.md), activations the variant's
 * dtype; shapes as runtime/tq_abi.h.  A launch whose buffers pass the
 * largest storage binding records its parts one after another. */
export function recordDispatch(device, encoder, kernel, op, buffers, args) {
  let parts;
  try {
    parts = plan(kernel, op, { ...args, hasPerm: !!buffers.channel_perm });
  } catch (e) {
    throw new Error(`tqgen: ${kernel.name} ${op}: ${e.message}`);
  }
  const pass = encoder.beginComputePass({ label: `${kernel.name} ${op}` });
  for (const part of parts) {
    const params = device.createBuffer({ size: part.params.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(params, 0, part.params);
    for (const step of part.steps) {
      const st = kernel.stages[step.stage];
      const entries = st.bindings.map((b) => {
        const name = BINDINGS[b];
        const buffer = name === "params" ? params : name === "tables" ? kernel.tables
          : buffers[name] || kernel.dummy;
        if (part.size[b])
          return { binding: b, resource: { buffer, offset: part.offset[b], size: part.size[b] } };
        if (name !== "params" && buffer.size > kernel.maxBinding)
          throw new Error(`tqgen: ${kernel.name} ${op}: ${step.stage}: binding ${b} (${name}) ` +
            `is a buffer of ${buffer.size} bytes, past this device's largest storage ` +
            `binding (${kernel.maxBinding} bytes); ${wholeWhy(kernel.variant, name)}`);
        return { binding: b, resource: { buffer } };
      });
      pass.setPipeline(st.pipeline);
      pass.setBindGroup(0, device.createBindGroup({ layout: st.layout, entries }));
      pass.dispatchWorkgroups(...step.grid);
    }
  }
  pass.end();
}

export { OPS };
