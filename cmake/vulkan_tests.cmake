# vulkan_tests.cmake - the Vulkan tests (included inside CMakeLists.txt's
# test section, where tq_test exists).  test_vulkan runs on lavapipe in CI
# and skips (77) on machines without a Vulkan loader or device; its AOT part
# links the dispatch table tqgen writes for tests/vulkan/aot.lua.
if(TQ_HAVE_VULKAN_BACKEND AND TQ_GLSLANG_INCLUDE AND NOT TQ_GLSLANG_MISSING)
  set(TQ_VK_AOT ${CMAKE_BINARY_DIR}/vk-aot)
  add_custom_command(
    OUTPUT ${TQ_VK_AOT}/vkaot_dispatch.c ${TQ_VK_AOT}/vkaot_dispatch.h
    COMMAND tqgen ${CMAKE_SOURCE_DIR}/tests/vulkan/aot.lua --backend vulkan -o ${TQ_VK_AOT}
    DEPENDS tqgen ${CMAKE_SOURCE_DIR}/tests/vulkan/aot.lua
    COMMENT "tqgen: Vulkan AOT table for test_vulkan" VERBATIM)
  # Under the sanitizers the reference and the verifier run several times
  # slower: that pass covers the shipped specs' contiguous variants of their
  # first dtype and one long context (every stage and host path of ours;
  # the variant breadth is left to the normal pass).
  set(TQ_VK_QUICK "")
  if(TQ_SANITIZE)
    set(TQ_VK_QUICK quick)
  endif()
  tq_test(vulkan ${CMAKE_SOURCE_DIR} ${TQ_VK_QUICK})
  target_sources(test_vulkan PRIVATE ${TQ_VK_AOT}/vkaot_dispatch.c)
  target_include_directories(test_vulkan PRIVATE ${TQ_VK_AOT} runtime)
  set_tests_properties(vulkan PROPERTIES SKIP_RETURN_CODE 77)
  add_test(NAME vulkan_cli COMMAND ${CMAKE_COMMAND} -DTQGEN=$<TARGET_FILE:tqgen>
           -DSRC=${CMAKE_SOURCE_DIR} -DWORK=${CMAKE_BINARY_DIR}/vulkan-cli-test
           -P ${CMAKE_SOURCE_DIR}/tests/vulkan/cli_vulkan.cmake)
  set_tests_properties(vulkan_cli PROPERTIES ENVIRONMENT "XDG_CACHE_HOME=${TQ_TEST_CACHE}")
endif()
