// ---- templates/wgsl/webgpu.js: the runtime part of every generated module.
// Mirrors backends/wgsl.c (bind group layouts, launch plan, uniform block)
// so a web engine records exactly the dispatches the native runtime does.

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

/** Layout entries of one stage ("encode", "decode", "prefill", "reduce",
 * "dequant") of a variant and flavour. */
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

/** Compiles a variant's module in one flavour ("core", or "f16sg" on a
 * device created with the "shader-f16" and "subgroups" features) and builds
 * its pipelines and tables buffer.  Throws with the generated line of the
 * first compilation error. */
export async function createKernel(device, name, flavour = "core") {
  const v = variants[name];
  if (!v) throw new Error(`tqgen: no variant ${name} in family ${family}`);
  const f = v.flavours[flavour];
  if (!f) throw new Error(`tqgen: ${name} has no ${flavour} flavour`);
  const label = `${name}.${flavour}.wgsl`;
  const module = device.createShaderModule({ code: f.code, label });
  const info = await module.getCompilationInfo();
  const bad = info.messages.find((m) => m.type === "error");
  if (bad) throw new Error(`tqgen: ${label}:${bad.lineNum}:${bad.linePos}: ${bad.message}`);
  const stages = {};
  for (const [stage, s] of Object.entries(f.stages)) {
    const layout = device.createBindGroupLayout({
      label: `${label} ${stage}`, entries: bindGroupLayoutEntries(name, flavour, stage) });
    const pipeline = device.createComputePipeline({
      label: `${label} ${stage}`,
      layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: s.entryPoint },
    });
    stages[stage] = { layout, pipeline, bindings: s.bindings, workgroupSize: s.workgroupSize };
  }
  const data = decodeTables(TABLES[v.tables]);
  const tables = device.createBuffer({ label: `${label} tables`,
    size: (data.byteLength + 15) & ~15, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(tables, 0, data);
  const dummy = device.createBuffer({ label: `${label} unused binding`, size: 16,
    usage: GPUBufferUsage.STORAGE });
  return { name, flavour, variant: v.variant, stages, tables, dummy };
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

/** The uniform block and the dispatches of one op.  args: batch, kvHeads,
 * nTokens, capacity (contiguous) or numBlocks and maxBlocks (paged),
 * smScale (default 1/sqrt(head_dim)), hasPerm. */
export function plan(kernel, op, args) {
  const v = kernel.variant;
  const rows = args.nTokens * v.group, tiles = Math.ceil(rows / 4);
  const s = splits(kernel, op, args);
  const params = new ArrayBuffer(48);
  const u = new Uint32Array(params), f = new Float32Array(params);
  u.set([args.batch, args.kvHeads, args.nTokens, args.capacity || 0,
    args.numBlocks || 0, args.maxBlocks || 0]);
  f[6] = args.smScale || 1 / Math.sqrt(v.head_dim);
  u.set([s, args.hasPerm ? 1 : 0, rows, tiles, 0], 7);
  if (op === "encode" || op === "dequant")
    return { params, steps: [{ stage: op, grid: [args.nTokens, args.kvHeads, args.batch] }] };
  if (op !== "decode" && op !== "prefill") throw new Error(`tqgen: unknown op ${op}`);
  return { params, steps: [
    { stage: op, grid: [s, args.kvHeads * tiles, args.batch] },
    { stage: "reduce", grid: [rows, args.kvHeads, args.batch] },
  ] };
}

/** Records op into a command encoder.  buffers: GPUBuffers named as
 * BINDINGS (k_cache, v_cache, seq_lens, q, out, workspace, ...);
 * block_table and channel_perm may be omitted (identity order).  The
 * caches are packed slots (docs/FORMAT.md), activations the variant's
 * dtype; shapes as runtime/tq_abi.h. */
export function recordDispatch(device, encoder, kernel, op, buffers, args) {
  const p = plan(kernel, op, { ...args, hasPerm: !!buffers.channel_perm });
  const params = device.createBuffer({ size: 48,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(params, 0, p.params);
  const pass = encoder.beginComputePass({ label: `${kernel.name} ${op}` });
  for (const step of p.steps) {
    const st = kernel.stages[step.stage];
    const entries = st.bindings.map((b) => {
      const name = BINDINGS[b];
      const buffer = name === "params" ? params : name === "tables" ? kernel.tables
        : buffers[name] || kernel.dummy;
      return { binding: b, resource: { buffer } };
    });
    pass.setPipeline(st.pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: st.layout, entries }));
    pass.dispatchWorkgroups(...step.grid);
  }
  pass.end();
}

export { OPS };
