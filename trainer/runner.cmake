# mlq_runner: the training loop, eval and predict, OpenBLAS set-up; and mlq-trainer.
add_library(mlq_runner STATIC
  ${CMAKE_CURRENT_LIST_DIR}/train.c
  ${CMAKE_CURRENT_LIST_DIR}/augment.c
  ${CMAKE_CURRENT_LIST_DIR}/blas.c
  ${CMAKE_CURRENT_LIST_DIR}/standalone.c
  ${CMAKE_CURRENT_LIST_DIR}/evaluate.c
  ${CMAKE_CURRENT_LIST_DIR}/generate.c
  ${CMAKE_CURRENT_LIST_DIR}/worker.c
  ${CMAKE_CURRENT_LIST_DIR}/cgroup.c
  ${CMAKE_CURRENT_LIST_DIR}/serve.c)
target_include_directories(mlq_runner PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_runner PUBLIC mlq_engine mlq_spec_model mlq_sampling mlq_schedule mlq_checkpoint mlq_dataset mlq_job_memory mlq_dscache mlq_store mlq_common PkgConfig::ZLIB
                      PkgConfig::OPENBLAS Threads::Threads PRIVATE mlq_warnings m)

add_executable(mlq-trainer ${CMAKE_CURRENT_LIST_DIR}/main.c)
target_link_libraries(mlq-trainer PRIVATE mlq_runner mlq_warnings)
