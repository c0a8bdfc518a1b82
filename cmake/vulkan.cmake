# vulkan.cmake - the Vulkan backend (included by CMakeLists.txt after the
# tqemit and tq targets exist).
#  - gen/: the GLSL emitter, the module image, and the GLSL -> SPIR-V step
#    (glslang's C interface, spvValidate, spirv-opt's performance recipe in
#    gen/spirv_opt.cpp, the project's one C++ file).  Static libraries from
#    glslang-dev and spirv-tools; without them the emitter still builds and
#    the compile step reports that it is missing.
#  - backends/vulkan.c: Vulkan through volk (libvulkan-volk-dev, header
#    only), so nothing links against libvulkan; built when volk.h and the
#    Vulkan headers are found.
option(TQ_VULKAN "Vulkan backend and SPIR-V compiler when their packages are found" ON)

target_sources(tqemit PRIVATE gen/emit_vulkan.c gen/vk_image.c gen/spirv.c)

set(TQ_GLSLANG_LIBS glslang-default-resource-limits glslang SPIRV
    MachineIndependent OSDependent GenericCodeGen OGLCompiler
    SPIRV-Tools-opt SPIRV-Tools)
set(TQ_GLSLANG_PATHS "")
set(TQ_GLSLANG_MISSING "")
find_path(TQ_GLSLANG_INCLUDE glslang/Include/glslang_c_interface.h)
find_path(TQ_SPIRV_TOOLS_INCLUDE spirv-tools/libspirv.h)
foreach(lib IN LISTS TQ_GLSLANG_LIBS)
  find_library(TQ_LIB_${lib} NAMES ${lib})
  if(TQ_LIB_${lib})
    list(APPEND TQ_GLSLANG_PATHS "${TQ_LIB_${lib}}")
  else()
    list(APPEND TQ_GLSLANG_MISSING ${lib})
  endif()
endforeach()
if(TQ_VULKAN AND TQ_GLSLANG_INCLUDE AND TQ_SPIRV_TOOLS_INCLUDE AND NOT TQ_GLSLANG_MISSING)
  enable_language(CXX)
  set(CMAKE_CXX_STANDARD 17)
  # Its own object library: the C warning flags do not apply to C++.
  add_library(tqspvopt OBJECT gen/spirv_opt.cpp)
  target_include_directories(tqspvopt PRIVATE ${TQ_SPIRV_TOOLS_INCLUDE})
  target_compile_options(tqspvopt PRIVATE -Wall -Wextra $<$<BOOL:${TQ_WERROR}>:-Werror>)
  target_sources(tqemit PRIVATE $<TARGET_OBJECTS:tqspvopt>)
  set_property(SOURCE gen/spirv.c APPEND PROPERTY COMPILE_DEFINITIONS TQG_HAVE_GLSLANG=1)
  # glslang's libraries refer to each other in a cycle: a link group lets
  # the linker rescan them.  libstdc++ is named so engines that link the
  # runtime from plain C need no C++ toolchain setup.
  target_link_libraries(tqemit PRIVATE "$<LINK_GROUP:RESCAN,${TQ_GLSLANG_PATHS}>"
                        stdc++ Threads::Threads)
  message(STATUS "SPIR-V compiler: glslang + SPIRV-Tools (in-process)")
else()
  message(STATUS "SPIR-V compiler: off (TQ_VULKAN=${TQ_VULKAN}; missing: "
                 "${TQ_GLSLANG_MISSING} ${TQ_GLSLANG_INCLUDE} ${TQ_SPIRV_TOOLS_INCLUDE})")
endif()

# The runtime backend: volk's header-only loader and the Vulkan headers.
find_path(TQ_VOLK_INCLUDE volk.h)
find_path(TQ_VULKAN_INCLUDE vulkan/vulkan.h)
if(TQ_VULKAN AND TQ_VOLK_INCLUDE AND TQ_VULKAN_INCLUDE)
  target_sources(tq PRIVATE backends/vulkan.c backends/volk_impl.c)
  # volk's own text is not held to the project's warning flags.
  set_property(SOURCE backends/volk_impl.c APPEND PROPERTY COMPILE_OPTIONS -w -Wno-error)
  set_property(SOURCE runtime/runtime.c APPEND PROPERTY COMPILE_DEFINITIONS TQ_HAVE_VULKAN=1)
  target_include_directories(tq PRIVATE ${TQ_VOLK_INCLUDE} ${TQ_VULKAN_INCLUDE})
  set(TQ_HAVE_VULKAN_BACKEND ON)
  message(STATUS "Vulkan backend: on (volk, loader opened at run time)")
else()
  set(TQ_HAVE_VULKAN_BACKEND OFF)
  message(STATUS "Vulkan backend: off (TQ_VULKAN=${TQ_VULKAN}, volk.h: ${TQ_VOLK_INCLUDE}, "
                 "vulkan/vulkan.h: ${TQ_VULKAN_INCLUDE})")
endif()
