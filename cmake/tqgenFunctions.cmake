# tqgen_add_kernels(TARGET SPEC [BACKENDS c ...] [OUTPUT_DIR dir])
#
# Runs tqgen on SPEC at build time (again whenever the spec or tqgen
# changes), compiles the generated kernels and dispatch table into TARGET and
# links the runtime.  TARGET then registers the table:
#   tq_register(backend, &tq_dispatch_<family>);  (#include "<family>_dispatch.h")
# The file list comes from `tqgen SPEC --print-files` at configure time; the
# spec is a configure dependency, so adding a variant re-runs cmake.
function(tqgen_add_kernels target spec)
  cmake_parse_arguments(ARG "" "OUTPUT_DIR" "BACKENDS" ${ARGN})
  if(NOT TQGEN_EXECUTABLE)
    message(FATAL_ERROR "tqgen_add_kernels: TQGEN_EXECUTABLE is not set")
  endif()
  get_filename_component(spec "${spec}" ABSOLUTE)
  get_filename_component(name "${spec}" NAME_WE)
  set(out "${ARG_OUTPUT_DIR}")
  if(NOT out)
    set(out "${CMAKE_CURRENT_BINARY_DIR}/tqgen/${name}")
  endif()
  set(backend_args "")
  foreach(b IN LISTS ARG_BACKENDS)
    list(APPEND backend_args --backend ${b})
  endforeach()
  execute_process(
    COMMAND "${TQGEN_EXECUTABLE}" "${spec}" ${backend_args} --print-files
    OUTPUT_VARIABLE files ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "tqgen_add_kernels(${target}): tqgen failed:\n${err}")
  endif()
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${spec}")
  string(STRIP "${files}" files)
  string(REPLACE "\n" ";" files "${files}")
  list(TRANSFORM files PREPEND "${out}/")
  add_custom_command(
    OUTPUT ${files}
    COMMAND "${TQGEN_EXECUTABLE}" "${spec}" -o "${out}" ${backend_args}
    DEPENDS "${spec}" "${TQGEN_EXECUTABLE}"
    COMMENT "tqgen ${name}: generating kernels"
    VERBATIM)
  list(FILTER files INCLUDE REGEX "\\.c$")
  target_sources(${target} PRIVATE ${files})
  target_include_directories(${target} PRIVATE "${out}")
  if(TARGET tqgen::tq)
    target_link_libraries(${target} PRIVATE tqgen::tq)
  else()
    target_link_libraries(${target} PRIVATE tq)
  endif()
endfunction()
