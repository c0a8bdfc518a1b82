# wgsl.cmake - the WebGPU / WGSL backend (included by CMakeLists.txt after
# the tqemit, tq and tqgenlib targets exist).
#  - gen/emit_wgsl.c: the WGSL emitter (templates/wgsl/kernel.wgsl).
#  - backends/wgsl.c: wgpu-native through its C API (webgpu.h), dlopened at
#    run time.  scripts/fetch_wgpu.sh (run by scripts/setup.sh) unpacks the
#    pinned wheel's library and headers into TQ_WGPU_DIR; without the
#    headers the backend still builds and reports itself unavailable.
#  - backends/wgsl_plan.c: its launch plan, pure arithmetic (always built).
option(TQ_WGSL "WebGPU backend when the wgpu-native headers are found" ON)
set(TQ_WGPU_DIR "${CMAKE_BINARY_DIR}/wgpu" CACHE PATH
    "wgpu-native: lib/libwgpu_native.so and include/webgpu.h, wgpu.h")

target_sources(tqemit PRIVATE gen/emit_wgsl.c)
target_sources(tq PRIVATE backends/wgsl.c backends/wgsl_plan.c)
set(TQ_WGPU_LIB "${TQ_WGPU_DIR}/lib/libwgpu_native.so")
if(TQ_WGSL AND EXISTS "${TQ_WGPU_DIR}/include/webgpu.h"
   AND EXISTS "${TQ_WGPU_DIR}/include/wgpu.h")
  # The headers as system headers: our warning flags are not theirs.  The
  # library's path is baked in; TQ_WGPU_LIBRARY overrides it at run time.
  set_property(SOURCE backends/wgsl.c APPEND PROPERTY COMPILE_DEFINITIONS
               TQ_HAVE_WEBGPU_H=1 "TQ_WGPU_LIBRARY_PATH=\"${TQ_WGPU_LIB}\"")
  set_property(SOURCE backends/wgsl.c APPEND PROPERTY COMPILE_OPTIONS
               "-isystem${TQ_WGPU_DIR}/include")
  set(TQ_WGSL_ON 1)
  message(STATUS "WebGPU backend: on (${TQ_WGPU_LIB})")
else()
  set(TQ_WGSL_ON 0)
  message(STATUS "WebGPU backend: off (TQ_WGSL=${TQ_WGSL}; no webgpu.h in "
                 "${TQ_WGPU_DIR}/include: run scripts/fetch_wgpu.sh ${CMAKE_BINARY_DIR})")
endif()

# Called from the tests section of CMakeLists.txt.
function(tq_wgsl_tests)
  add_executable(test_wgsl tests/test_wgsl.c)
  target_compile_options(test_wgsl PRIVATE ${TQ_WARNINGS})
  target_include_directories(test_wgsl PRIVATE tests)
  target_link_libraries(test_wgsl PRIVATE tqgenlib tq)
  # With the headers built in, a missing library or adapter fails the test;
  # 77 (skipped) only for builds without them.
  # Sanitizer builds run the kernels of a subset (tests/test_wgsl.c says why).
  if(TQ_SANITIZE)
    set(subset 1)
  else()
    set(subset 0)
  endif()
  add_test(NAME wgsl COMMAND test_wgsl ${CMAKE_SOURCE_DIR} ${TQ_WGSL_ON} ${subset})
  # XDG_RUNTIME_DIR quiets Mesa's window-system probe on headless machines.
  set_tests_properties(wgsl PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT
    "XDG_CACHE_HOME=${CMAKE_BINARY_DIR}/test-cache-wgsl;XDG_RUNTIME_DIR=${CMAKE_BINARY_DIR}")

  # AOT: a dispatch table tqgen writes at build time, linked into the test.
  set(aot ${CMAKE_BINARY_DIR}/wgsl-aot)
  add_custom_command(
    OUTPUT ${aot}/wgsl_aot_dispatch.c ${aot}/wgsl_aot_dispatch.h
    COMMAND ${CMAKE_COMMAND} -E env XDG_RUNTIME_DIR=${CMAKE_BINARY_DIR}
            $<TARGET_FILE:tqgen> ${CMAKE_SOURCE_DIR}/tests/wgsl/aot.lua -o ${aot}
    DEPENDS tqgen ${CMAKE_SOURCE_DIR}/tests/wgsl/aot.lua
    COMMENT "tqgen tests/wgsl/aot.lua (WGSL dispatch table)" VERBATIM)
  add_executable(test_wgsl_aot tests/test_wgsl_aot.c ${aot}/wgsl_aot_dispatch.c)
  target_compile_options(test_wgsl_aot PRIVATE ${TQ_WARNINGS})
  target_include_directories(test_wgsl_aot PRIVATE tests ${aot})
  target_link_libraries(test_wgsl_aot PRIVATE tq)
  add_test(NAME wgsl_aot COMMAND test_wgsl_aot ${TQ_WGSL_ON})
  set_tests_properties(wgsl_aot PROPERTIES SKIP_RETURN_CODE 77 ENVIRONMENT
    "XDG_CACHE_HOME=${CMAKE_BINARY_DIR}/test-cache-wgsl;XDG_RUNTIME_DIR=${CMAKE_BINARY_DIR}")

  # The CLI: the JS module under node (its plan against the native one,
  # which wgsl_plan prints), and --verify --backend wgsl.
  add_executable(wgsl_plan tests/wgsl/plan.c)
  target_compile_options(wgsl_plan PRIVATE ${TQ_WARNINGS})
  target_link_libraries(wgsl_plan PRIVATE tqgenlib tq)
  find_program(TQ_NODE node)
  foreach(mode js verify)
    add_test(NAME wgsl_${mode} COMMAND ${CMAKE_COMMAND} -DTQGEN=$<TARGET_FILE:tqgen>
             -DPLAN=$<TARGET_FILE:wgsl_plan>
             -DSRC=${CMAKE_SOURCE_DIR} -DWORK=${CMAKE_BINARY_DIR}/wgsl-cli-${mode}
             -DNODE=${TQ_NODE} -DMODE=${mode} -P ${CMAKE_SOURCE_DIR}/tests/wgsl/cli.cmake)
    set_tests_properties(wgsl_${mode} PROPERTIES SKIP_REGULAR_EXPRESSION "TQ_SKIP"
      ENVIRONMENT "XDG_CACHE_HOME=${CMAKE_BINARY_DIR}/test-cache-wgsl;XDG_RUNTIME_DIR=${CMAKE_BINARY_DIR}")
  endforeach()
  if(NOT TQ_WGSL_ON)
    set_tests_properties(wgsl_verify PROPERTIES DISABLED ON)
  endif()
endfunction()
