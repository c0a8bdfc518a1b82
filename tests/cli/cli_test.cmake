# cli_test.cmake - the tqgen command line end to end:
#   cmake -DTQGEN=... -DSRC=... -DWORK=... -P cli_test.cmake
# Bad input gives its message and a nonzero exit; the same spec gives
# byte-identical trees; --verify passes on the C backend.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")
set(failures 0)

# expect(<exit: zero|nonzero> <substring of stdout+stderr> args...)
function(expect want text)
  execute_process(COMMAND "${TQGEN}" ${ARGN} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  set(all "${out}${err}")
  if(want STREQUAL "zero" AND NOT rc EQUAL 0)
    message(SEND_ERROR "tqgen ${ARGN}: exit ${rc}, want 0\n${all}")
  elseif(want STREQUAL "nonzero" AND (rc EQUAL 0 OR NOT rc MATCHES "^[0-9]+$"))
    message(SEND_ERROR "tqgen ${ARGN}: exit '${rc}', want a nonzero exit code (not a crash)\n${all}")
  endif()
  string(FIND "${all}" "${text}" at)
  if(at EQUAL -1)
    message(SEND_ERROR "tqgen ${ARGN}: output lacks '${text}':\n${all}")
  endif()
endfunction()

expect(nonzero "usage: tqgen")
expect(nonzero "unknown option '--frobnicate'" --frobnicate)
expect(nonzero "-o needs a value" ${SRC}/specs/qwen3.lua -o)
expect(nonzero "nothing to do" ${SRC}/specs/qwen3.lua)
expect(nonzero "cannot open" ${WORK}/missing.lua --list)
expect(nonzero "--backend 'metal': allowed c, cuda, vulkan, wgsl" ${SRC}/specs/qwen3.lua --list --backend metal)
expect(nonzero "allowed 1..8" --codebook 9)
expect(nonzero "allowed 1..8" --codebook x)
expect(zero "+0.452780" --codebook 2)
expect(zero "d128_g4_k2v2_qjl_bf16_paged16" ${SRC}/specs/qwen3.lua --list)
expect(zero "c/d64_g3_k4v4_f32.c" ${SRC}/specs/smollm2.lua --print-files)

# A bad spec: its file:line and key, nonzero exit, and no output folder.
file(WRITE "${WORK}/bad.lua" "return family {\n  name = 'x',\n  models = { model { name = 'm', head_dim = 100, q_heads = 2, kv_heads = 1 } },\n  quant = { quant { key_bits = 4, value_bits = 4 } },\n}\n")
expect(nonzero "bad.lua:3" ${WORK}/bad.lua -o ${WORK}/bad-out)
expect(nonzero "head_dim = 100" ${WORK}/bad.lua -o ${WORK}/bad-out)
if(EXISTS "${WORK}/bad-out")
  message(SEND_ERROR "a rejected spec still created its output folder")
endif()
file(WRITE "${WORK}/loop.lua" "while true do end\n")
expect(nonzero "instructions" ${WORK}/loop.lua --list)

# Same spec, byte-identical trees: qwen3's C and CUDA sources (80 files), and
# smollm2 with every backend its spec names (the SPIR-V and WGSL compiles of
# all of qwen3, twice, would double this test's time under ASan for no
# coverage the smaller spec lacks).
function(same_trees spec min a b)
  expect(zero "variants of" ${SRC}/specs/${spec}.lua -o ${WORK}/${a} ${ARGN})
  expect(zero "variants of" ${SRC}/specs/${spec}.lua -o ${WORK}/${b} ${ARGN})
  file(GLOB_RECURSE files RELATIVE "${WORK}/${a}" "${WORK}/${a}/*")
  file(GLOB_RECURSE files_b RELATIVE "${WORK}/${b}" "${WORK}/${b}/*")
  list(LENGTH files n)
  if(n LESS ${min} OR NOT files STREQUAL files_b)
    message(SEND_ERROR "${spec}: output trees differ in their file lists (${n} files)")
  endif()
  foreach(f IN LISTS files)
    file(SHA256 "${WORK}/${a}/${f}" ha)
    file(SHA256 "${WORK}/${b}/${f}" hb)
    if(NOT ha STREQUAL hb)
      message(SEND_ERROR "${spec}: ${f} differs between two runs")
    endif()
  endforeach()
endfunction()
same_trees(qwen3 80 a b --backend c --backend cuda)
same_trees(smollm2 48 c d)

# An unwritable output folder is an error, not a crash.
expect(nonzero "cannot" ${SRC}/specs/smollm2.lua -o /proc/tqgen-out)

# Every kernel of smollm2 on the C backend against the reference.
expect(zero "0 failed" ${SRC}/specs/smollm2.lua --verify --backend c)

# CUDA AOT: a fatbin per variant embedded in the dispatch table, the same
# bytes wherever the tree is written, and a table that compiles.
find_program(NVCC nvcc PATHS /usr/local/cuda/bin)
if(NVCC)
  set(ENV{NVCC} "${NVCC}")
  file(WRITE "${WORK}/tiny.lua" "return family {\n  name = 'tiny',\n  models = { model { name = 't', head_dim = 64, q_heads = 4, kv_heads = 2 } },\n  quant = { quant { key_bits = 4, value_bits = 4 } },\n  backends = { c = {}, cuda = { archs = { 'sm_80' } } },\n}\n")
  expect(zero "written" ${WORK}/tiny.lua -o ${WORK}/aot1 --aot)
  expect(zero "written" ${WORK}/tiny.lua -o ${WORK}/aot2 --aot)
  file(SHA256 "${WORK}/aot1/tiny_dispatch.c" h1)
  file(SHA256 "${WORK}/aot2/tiny_dispatch.c" h2)
  file(READ "${WORK}/aot1/tiny_dispatch.c" table)
  if(NOT h1 STREQUAL h2)
    message(SEND_ERROR "--aot output depends on where it is written")
  endif()
  if(NOT table MATCHES "tq_fatbin_0, sizeof tq_fatbin_0" OR NOT table MATCHES "\"cuda\"")
    message(SEND_ERROR "--aot wrote no CUDA fatbin entry")
  endif()
  execute_process(COMMAND cc -std=c11 -Wall -Wextra -Werror -c
                  -I${SRC}/runtime -I${SRC}/gen/core -I${WORK}/aot1
                  ${WORK}/aot1/tiny_dispatch.c -o ${WORK}/aot1/dispatch.o
                  RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(SEND_ERROR "the AOT dispatch table does not compile:\n${err}")
  endif()
  set(ENV{NVCC} "/nonexistent/nvcc")
  expect(nonzero "nvcc not found" ${WORK}/tiny.lua -o ${WORK}/aot3 --aot)
else()
  message(STATUS "nvcc not found: CUDA --aot not checked")
endif()
