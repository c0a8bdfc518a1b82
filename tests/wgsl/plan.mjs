// plan.mjs - the generated JS module's launch plan against the native one
// (backends/wgsl_plan.c, printed by the wgsl_plan tool) for launches in one
// part and in several, contiguous and paged, with attend_fast and without,
// every op, and one that cannot run: any difference fails.  Then
// createKernel and recordDispatch on a recording stand-in for a GPUDevice:
// attend_fast is built for the adapter's subgroup size and dispatched with
// the plan's windows.
// usage: node plan.mjs MODULE WGSL_PLAN SPEC
import { execFileSync } from "node:child_process";
import { pathToFileURL } from "node:url";

const [moduleFile, tool, spec] = process.argv.slice(2);
const m = await import(pathToFileURL(moduleFile).href);
let failures = 0;
function check(ok, what) {
  if (!ok) {
    console.error(`plan.mjs: check failed: ${what}`);
    failures++;
  }
}

function jsPlan(kernel, op, args) {
  try {
    return m.plan(kernel, op, args).map((p) => ({ first: p.first,
      params: [...new Uint32Array(p.params)], offset: p.offset, size: p.size,
      steps: p.steps }));
  } catch (e) {
    return { error: e.message };
  }
}

function nativePlan(kernel, op, args) {
  const argv = [spec, kernel.name, op, args.batch, args.kvHeads, args.nTokens,
    args.capacity || 0, args.numBlocks || 0, args.maxBlocks || 0,
    args.hasPerm ? 1 : 0, kernel.subgroupSize ? 1 : 0, kernel.maxBinding];
  return JSON.parse(execFileSync(tool, argv.map(String)));
}

// [variant, flavour, subgroup size, largest binding, op, args, parts]
// (parts: how many the launch takes, 0: an error).  Strides: d64 keys
// and 4-bit values take 36-byte slots, so 1003 slots of 2 heads are
// 72216 bytes a sequence, not a multiple of 256.
const BIG = 2 ** 31;
const paged = { batch: 2, kvHeads: 2, nTokens: 1, numBlocks: 9, maxBlocks: 4 };
const cases = [
  ["d64_g2_k4v4_f16_paged16", "core", 0, BIG, "decode", paged, 1],
  ["d64_g2_k4v4_f16_paged16", "f16sg", 8, BIG, "decode", paged, 1],
  ["d64_g2_k4v4_f16_paged16", "f16sg", 32, BIG, "prefill",
    { batch: 3, kvHeads: 2, nTokens: 19, numBlocks: 40, maxBlocks: 13, hasPerm: true }, 1],
  ["d64_g2_k4v4_f16_paged16", "f16sg", 12, BIG, "decode", paged, 1], // no such size
  ["d64_g2_k4v4_f16", "f16sg", 16, 160000, "decode",
    { batch: 7, kvHeads: 2, nTokens: 2, capacity: 1003 }, 4],
  ["d64_g2_k4v4_f16", "f16sg", 16, 400000, "prefill",
    { batch: 7, kvHeads: 2, nTokens: 19, capacity: 1003, hasPerm: true }, 7],
  ["d64_g2_k4v4_f16", "core", 0, 160000, "decode",
    { batch: 7, kvHeads: 2, nTokens: 1, capacity: 1003 }, 4],
  ["d64_g2_k3v2_o8h_f16", "f16sg", 8, 100000, "decode", // no attend_fast
    { batch: 5, kvHeads: 2, nTokens: 1, capacity: 1003 }, 5],
  ["d64_g2_k3v2_o8h_f16", "core", 0, 100000, "encode",
    { batch: 5, kvHeads: 2, nTokens: 16, capacity: 1003 }, 5],
  ["d64_g2_k3v2_o8h_f16", "core", 0, 300000, "dequant",
    { batch: 5, kvHeads: 2, nTokens: 983, capacity: 1003 }, 5],
  ["d64_g2_k4v4_f16", "core", 0, 72000, "decode",
    { batch: 4, kvHeads: 2, nTokens: 1, capacity: 1003 }, 0],
];
for (const [name, flavour, subgroupSize, maxBinding, op, args, parts] of cases) {
  const k = m.describeKernel(name, flavour, { subgroupSize, maxBinding });
  const js = jsPlan(k, op, args), native = nativePlan(k, op, args);
  const what = `${name} ${flavour} (subgroups of ${subgroupSize}) ${op} ` +
    `${JSON.stringify(args)} under ${maxBinding} bytes`;
  check(JSON.stringify(js) === JSON.stringify(native),
    `${what}: JS ${JSON.stringify(js)}\n  native ${JSON.stringify(native)}`);
  if (!parts) {
    check(js.error && js.error.startsWith("k_cache: one sequence takes 72216 bytes"),
      `${what}: error ${js.error}`);
    continue;
  }
  check(js.length === parts, `${what}: ${js.length} parts, want ${parts}`);
  const fast = flavour === "f16sg" && name.startsWith("d64_g2_k4v4") &&
    [8, 16, 32].includes(subgroupSize);
  const attend = op === "decode" || op === "prefill";
  check(!attend || js[0].steps[0].stage === (fast ? "attend_fast" : op),
    `${what}: runs ${js[0].steps[0].stage}`);
  if (parts > 1) // a window that starts before its first sequence
    check(js.some((p) => p.params.slice(12).some((x) => x > 0)), `${what}: no seq0`);
  console.log(`${what}: ${js.length} part(s), ${js[0].steps.map((s) => s.stage)} ok`);
}

// The old literal check: one part of the paged decode above.
const k = m.describeKernel("d64_g2_k4v4_f16_paged16", "core");
const p = m.plan(k, "decode", paged)[0];
check(p.steps.length === 2 && p.steps[0].grid.join() === "2,2,2" &&
  p.steps[1].grid.join() === "2,2,2", `decode plan ${JSON.stringify(p.steps)}`);
check(m.workspaceBytes(k, "decode", paged) === 4 * 2 * 2 * 2 * 2 * 66, "workspace");

// createKernel and recordDispatch on a stand-in device that records what
// it is asked for: an adapter with subgroups of 16 and a 160000-byte
// largest binding.
globalThis.GPUShaderStage = { COMPUTE: 4 };
globalThis.GPUBufferUsage = { MAP_READ: 1, COPY_SRC: 4, COPY_DST: 8, UNIFORM: 64, STORAGE: 128 };
const pipelines = [], groups = [], dispatches = [];
const device = {
  adapterInfo: { subgroupMinSize: 16, subgroupMaxSize: 16 },
  limits: { maxStorageBufferBindingSize: 160000 },
  queue: { writeBuffer() {} },
  createShaderModule: () => ({ getCompilationInfo: async () => ({ messages: [] }) }),
  createBindGroupLayout: (d) => d,
  createPipelineLayout: (d) => d,
  createComputePipeline: (d) => (pipelines.push(d), d),
  createBuffer: (d) => ({ ...d }),
  createBindGroup: (d) => (groups.push(d), d),
};
const kernel = await m.createKernel(device, "d64_g2_k4v4_f16", "f16sg");
const fastPipe = pipelines.find((d) => d.compute.entryPoint === "attend_fast");
check(kernel.subgroupSize === 16 && fastPipe && fastPipe.compute.constants.TQ_SG === 16,
  `attend_fast built for subgroups of ${kernel.subgroupSize}`);
check(kernel.stages.attend_fast && kernel.stages.attend_fast.workgroupSize[0] === 64,
  "attend_fast's workgroup: 4 subgroups of 16");
let pipe = null, group = null;
const pass = {
  setPipeline: (x) => { pipe = x; },
  setBindGroup: (i, g) => { group = g; },
  dispatchWorkgroups: (...grid) => dispatches.push({ stage: pipe.compute.entryPoint, grid, group }),
  end() {},
};
const encoder = { beginComputePass: () => pass };
const args = { batch: 7, kvHeads: 2, nTokens: 2, capacity: 1003 };
const buf = (size) => ({ size });
const buffers = { k_cache: buf(7 * 72216), v_cache: buf(7 * 72216), seq_lens: buf(28),
  q: buf(7 * 2 * 2 * 2 * 64 * 2), out: buf(7 * 2 * 2 * 2 * 64 * 2),
  workspace: buf(m.workspaceBytes(kernel, "decode", args)) };
m.recordDispatch(device, encoder, kernel, "decode", buffers, args);
const native = nativePlan(kernel, "decode", args);
const want = native.flatMap((part) => part.steps.map((s) => ({ ...s, part })));
check(dispatches.length === want.length, `${dispatches.length} dispatches, want ${want.length}`);
dispatches.forEach((d, i) => {
  const w = want[i];
  check(d.stage === w.stage && d.grid.join() === w.grid.join(),
    `dispatch ${i}: ${d.stage} ${d.grid}, want ${w.stage} ${w.grid}`);
  for (const e of d.group.entries) {
    const size = w.part.size[e.binding];
    check(size ? e.resource.offset === w.part.offset[e.binding] && e.resource.size === size
      : e.resource.offset === undefined,
    `dispatch ${i} binding ${e.binding}: ${JSON.stringify(e.resource)}`);
  }
});
check(dispatches[0].stage === "attend_fast", "recordDispatch runs attend_fast");
console.log(`recordDispatch: ${dispatches.length} dispatches in ${native.length} parts, ` +
  `first ${dispatches[0].stage}`);

if (failures) {
  console.error(`plan.mjs: ${failures} check(s) failed`);
  process.exit(1);
}
console.log("plan.mjs: the JS plan matches the native plan");
