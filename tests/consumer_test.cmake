# Installs the build into a scratch prefix, builds tests/consumer against it
# with find_package(tqgen) and runs it.  cmake -DBUILD=... -DSRC=... -P this
set(prefix "${BUILD}/consumer-prefix")
set(cbuild "${BUILD}/consumer-build")
file(REMOVE_RECURSE "${prefix}" "${cbuild}")
foreach(step
    "${CMAKE_COMMAND};--install;${BUILD};--prefix;${prefix}"
    "${CMAKE_COMMAND};-S;${SRC}/tests/consumer;-B;${cbuild};-DCMAKE_PREFIX_PATH=${prefix};-DSPEC=${SRC}/specs/smollm2.lua"
    "${CMAKE_COMMAND};--build;${cbuild}"
    "${cbuild}/consumer")
  execute_process(COMMAND ${step} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: step failed (${rc}): ${step}")
  endif()
endforeach()
