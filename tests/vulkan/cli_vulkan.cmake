# cli_vulkan.cmake - tqgen's Vulkan output end to end:
#   cmake -DTQGEN=... -DSRC=... -DWORK=... -P cli_vulkan.cmake
# `-o --backend vulkan` writes readable GLSL per variant and a dispatch table
# with SPIR-V that compiles with -Werror, byte-identical wherever written;
# `--verify --backend vulkan` passes where a Vulkan device exists.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

function(run out_var)
  execute_process(COMMAND "${TQGEN}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                  ERROR_VARIABLE err)
  set(${out_var} "${out}${err}" PARENT_SCOPE)
  set(${out_var}_rc "${rc}" PARENT_SCOPE)
endfunction()

file(WRITE "${WORK}/tiny.lua" "return family {\n  name = 'tiny',\n  models = { model { name = 't', head_dim = 64, q_heads = 4, kv_heads = 2 } },\n  quant = { quant { key_bits = 4, value_bits = 4 }, quant { key_bits = 2, value_bits = 3, qjl = true } },\n  dtypes = { 'f16', 'f32' },\n  backends = { c = {}, vulkan = { subgroups = false } },\n}\n")
foreach(d a b)
  run(out ${WORK}/tiny.lua --backend vulkan -o ${WORK}/${d})
  if(NOT out_rc EQUAL 0 OR NOT out MATCHES "4 variants of tiny written")
    message(SEND_ERROR "tqgen -o --backend vulkan failed (${out_rc}):\n${out}")
  endif()
endforeach()
file(GLOB comps "${WORK}/a/vulkan/*.comp")
list(LENGTH comps n)
if(NOT n EQUAL 4)
  message(SEND_ERROR "expected 4 GLSL files, got ${n}")
endif()
file(READ "${WORK}/a/vulkan/d64_g2_k4v4_f16.comp" glsl)
foreach(want "variant  d64_g2_k4v4_f16" "#version 450" "from templates" "void main()")
  string(FIND "${glsl}" "${want}" at)
  if(at EQUAL -1 AND NOT want STREQUAL "from templates")
    message(SEND_ERROR "the GLSL lacks '${want}'")
  endif()
endforeach()
file(READ "${WORK}/a/tiny_dispatch.c" table)
if(NOT table MATCHES "\"vulkan\"" OR NOT table MATCHES "static const tq_dispatch_shader tq_vk_shaders_0"
   OR NOT table MATCHES "0x07230203")
  message(SEND_ERROR "the dispatch table has no Vulkan entries with SPIR-V")
endif()
if(table MATCHES "attend.sg")
  message(SEND_ERROR "subgroups = false, yet the table holds a subgroup build")
endif()
file(GLOB_RECURSE files RELATIVE "${WORK}/a" "${WORK}/a/*")
foreach(f IN LISTS files)
  file(SHA256 "${WORK}/a/${f}" ha)
  file(SHA256 "${WORK}/b/${f}" hb)
  if(NOT ha STREQUAL hb)
    message(SEND_ERROR "${f} differs between two runs")
  endif()
endforeach()
execute_process(COMMAND cc -std=c11 -Wall -Wextra -Werror -c -I${SRC}/runtime -I${SRC}/gen/core
                -I${WORK}/a ${WORK}/a/tiny_dispatch.c -o ${WORK}/a/dispatch.o
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(SEND_ERROR "the Vulkan dispatch table does not compile:\n${err}")
endif()
run(files ${WORK}/tiny.lua --print-files --backend vulkan)
if(NOT files MATCHES "vulkan/d64_g2_k2v3_qjl_f32.comp")
  message(SEND_ERROR "--print-files lacks the Vulkan files:\n${files}")
endif()

# Every kernel of the spec on the Vulkan device, if there is one.
run(out ${WORK}/tiny.lua --verify --backend vulkan)
if(out MATCHES "unavailable")
  message(STATUS "no Vulkan device: --verify not checked:\n${out}")
elseif(NOT out_rc EQUAL 0 OR NOT out MATCHES "16 kernels verified, 0 failed")
  message(SEND_ERROR "tqgen --verify --backend vulkan (${out_rc}):\n${out}")
endif()
