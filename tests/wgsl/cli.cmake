# cli.cmake - tqgen with the wgsl backend, run by ctest as
#   cmake -DTQGEN=... -DSRC=... -DWORK=... -DNODE=... -DMODE=js|verify -P cli.cmake
# js:     -o writes both flavours of every variant and <family>.webgpu.js,
#         and `node --check` accepts the module (exit 77: no node here).
# verify: tqgen --verify --backend wgsl runs every op against the reference.
set(spec ${SRC}/tests/wgsl/aot.lua)
if(MODE STREQUAL "js")
  if(NOT NODE OR NOT EXISTS "${NODE}")
    message("node not found: the JS module is not checked (scripts/setup.sh installs nodejs)")
    # ctest reads SKIP_RETURN_CODE 77 from a failed script through this marker.
    message(FATAL_ERROR "TQ_SKIP")
  endif()
  file(REMOVE_RECURSE ${WORK})
  execute_process(COMMAND ${TQGEN} ${spec} -o ${WORK} RESULT_VARIABLE rc ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "tqgen -o failed (${rc}): ${log}")
  endif()
  foreach(f wgsl/d64_g2_k4v4_f16_paged16.core.wgsl wgsl/d64_g2_k4v4_f16_paged16.f16sg.wgsl
            wgsl/d64_g2_k3v2_o8h_f16_paged16.core.wgsl wgsl_aot.webgpu.js
            wgsl_aot_dispatch.c manifest.json)
    if(NOT EXISTS ${WORK}/${f})
      message(FATAL_ERROR "tqgen -o did not write ${f}")
    endif()
  endforeach()
  execute_process(COMMAND ${NODE} --check ${WORK}/wgsl_aot.webgpu.js RESULT_VARIABLE rc
                  ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "node --check wgsl_aot.webgpu.js failed: ${log}")
  endif()
  # The module's plan and variant table, run by node (no GPU needed).
  file(WRITE ${WORK}/plan.mjs "
import * as m from './wgsl_aot.webgpu.js';
const k = { variant: m.variants['d64_g2_k4v4_f16_paged16'].variant };
const a = { batch: 2, kvHeads: 2, nTokens: 1, numBlocks: 9, maxBlocks: 4 };
const p = m.plan(k, 'decode', a);
if (p.steps.length !== 2 || p.steps[0].grid.join() !== '2,2,2' || p.steps[1].grid.join() !== '2,2,2')
  throw new Error('decode plan ' + JSON.stringify(p.steps));
if (m.workspaceBytes(k, 'decode', a) !== 4 * 2 * 2 * 2 * 2 * 66) throw new Error('workspace');
console.log('plan ok', JSON.stringify(p.steps));
")
  execute_process(COMMAND ${NODE} ${WORK}/plan.mjs RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the JS module's plan: ${log}")
  endif()
  message("node --check and plan: ok; ${out}")
elseif(MODE STREQUAL "verify")
  execute_process(COMMAND ${TQGEN} ${spec} --verify --backend wgsl
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE log)
  message("${out}")
  if(out MATCHES "unavailable")
    message(FATAL_ERROR "the wgsl backend is unavailable: ${out}")
  endif()
  if(NOT rc EQUAL 0 OR NOT out MATCHES "8 kernels verified, 0 failed")
    message(FATAL_ERROR "tqgen --verify --backend wgsl failed (${rc}): ${log}")
  endif()
  # No library: a clear message and a nonzero exit, not a crash.
  execute_process(COMMAND ${CMAKE_COMMAND} -E env TQ_WGPU_LIBRARY=/nonexistent/libwgpu_native.so
                  ${TQGEN} ${spec} --verify --backend wgsl
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE log)
  if(rc EQUAL 0 OR NOT out MATCHES "unavailable: cannot load the WebGPU library /nonexistent")
    message(FATAL_ERROR "without the library (${rc}): ${out}${log}")
  endif()
else()
  message(FATAL_ERROR "MODE must be js or verify")
endif()
