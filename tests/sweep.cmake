# Sweeps (issue 12): real mlq-broker, mlq-trainer and mlq processes on a small
# subset of Fashion-MNIST; one CTest entry per test (each well under a minute).
add_executable(test_sweep ${CMAKE_CURRENT_LIST_DIR}/test_sweep.c
               ${CMAKE_CURRENT_LIST_DIR}/broker_harness.c)
target_link_libraries(test_sweep PRIVATE mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                      PkgConfig::ZLIB PkgConfig::CMOCKA mlq_warnings)
target_compile_definitions(test_sweep PRIVATE MLQ_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                           MLQ_BINARY_DIR="${PROJECT_BINARY_DIR}")
add_dependencies(test_sweep mlq-broker mlq-trainer mlq)
foreach(part bad_input asha_sweep median_max_parallel broker_kill9 groups rm_top)
  add_test(NAME test_sweep_${part} COMMAND test_sweep test_${part})
  set_tests_properties(test_sweep_${part} PROPERTIES TIMEOUT 180
                       ENVIRONMENT "CMOCKA_MESSAGE_OUTPUT=STDOUT")
endforeach()
