# Checkpoint encoding and decoding (trainer/checkpoint.h), on its own so that
# readers of checkpoints (mlq export, tests, fuzzers) need not link the runner.
add_library(mlq_checkpoint STATIC ${CMAKE_CURRENT_LIST_DIR}/checkpoint.c)
target_include_directories(mlq_checkpoint PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_checkpoint PUBLIC mlq_engine mlq_common PkgConfig::ZLIB PRIVATE mlq_warnings)
