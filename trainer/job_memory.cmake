# A job's memory estimate (trainer/job_memory.h), for the runner and mlq submit.
add_library(mlq_job_memory STATIC ${CMAKE_CURRENT_LIST_DIR}/job_memory.c)
target_include_directories(mlq_job_memory PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_job_memory PUBLIC mlq_dataset mlq_spec_model mlq_engine mlq_common
                      PRIVATE mlq_warnings)
