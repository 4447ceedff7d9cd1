# security (issue 11): CURVE, the ZAP handler and key roles, with real
# mlq-broker, mlq-trainer and mlq processes.
mlq_add_test(test_security SOURCES test_security.c broker_harness.c
             LIBS mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5 TIMEOUT 300)
add_dependencies(test_security mlq-broker mlq-trainer mlq)
# A client whose first send comes after the broker refused its handshake
# (tests/slow_connect_shim.c delays zmq_connect's return).
add_library(mlq_slow_connect_shim MODULE ${CMAKE_CURRENT_LIST_DIR}/slow_connect_shim.c)
# No sanitizer in the preloaded library: the runtime must come from the program.
set_target_properties(mlq_slow_connect_shim PROPERTIES COMPILE_OPTIONS "" LINK_OPTIONS "")
target_link_libraries(mlq_slow_connect_shim PRIVATE mlq_warnings ${CMAKE_DL_LIBS})
add_dependencies(test_security mlq_slow_connect_shim)
target_compile_definitions(test_security PRIVATE
  MLQ_SLOW_CONNECT_SHIM="$<TARGET_FILE:mlq_slow_connect_shim>")
