# cli.cmake - tqgen with the wgsl backend, run by ctest as
#   cmake -DTQGEN=... -DPLAN=... -DSRC=... -DWORK=... -DNODE=... -DMODE=js|verify -P cli.cmake
# js:     -o writes both flavours of every variant and <family>.webgpu.js,
#         `node --check` accepts the module and tests/wgsl/plan.mjs finds
#         its plan() equal to the native one, which PLAN (wgsl_plan)
#         prints (exit 77: no node here).
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
            wgsl/d64_g2_k3v2_o8h_f16_paged16.core.wgsl wgsl/d64_g2_k4v4_f16.f16sg.wgsl
            wgsl_aot.webgpu.js
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
  # The module's plan against the native plan, and its createKernel and
  # recordDispatch on a stand-in device, run by node (no GPU needed).
  execute_process(COMMAND ${NODE} ${SRC}/tests/wgsl/plan.mjs ${WORK}/wgsl_aot.webgpu.js
                          ${PLAN} ${spec}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE log)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the JS module's plan (tests/wgsl/plan.mjs): ${out}${log}")
  endif()
  message("node --check and plan: ok\n${out}")
elseif(MODE STREQUAL "verify")
  execute_process(COMMAND ${TQGEN} ${spec} --verify --backend wgsl
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE log)
  message("${out}")
  if(out MATCHES "unavailable")
    message(FATAL_ERROR "the wgsl backend is unavailable: ${out}")
  endif()
  if(NOT rc EQUAL 0 OR NOT out MATCHES "16 kernels verified, 0 failed")
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
