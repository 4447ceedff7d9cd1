mlq_add_test(test_spec SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_spec.c LIBS mlq_common)

# The atomic file helper, and the programs that replace files through it,
# watched by an LD_PRELOAD library that logs (and fails) their fsyncs.
add_library(mlq_sync_shim MODULE ${CMAKE_CURRENT_LIST_DIR}/sync_shim.c)
# No sanitizer in the preloaded library: the runtime must come from the program.
set_target_properties(mlq_sync_shim PROPERTIES COMPILE_OPTIONS "" LINK_OPTIONS "")
target_link_libraries(mlq_sync_shim PRIVATE mlq_warnings ${CMAKE_DL_LIBS})
mlq_add_test(test_atomic_file SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_atomic_file.c
             LIBS mlq_common mlq_testutil PkgConfig::HDF5 TIMEOUT 120)
add_dependencies(test_atomic_file mlq mlq-trainer mlq_sync_shim)
target_compile_definitions(test_atomic_file PRIVATE
  MLQ_SYNC_SHIM="$<TARGET_FILE:mlq_sync_shim>")

# SHA-256 (common/sha256.c), the address of a pushed dataset.
mlq_add_test(test_sha256 SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_sha256.c
             LIBS mlq_common mlq_testutil TIMEOUT 60)

# Waiting for a child that may be stuck (common/child.c): the dataset readers'.
mlq_add_test(test_child SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_child.c LIBS mlq_common TIMEOUT 60)
