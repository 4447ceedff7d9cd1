# mlq generate's sampler (trainer/sampling.h): the generate job's and the
# client's loop over a deployment (mlq generate --deployment) share it.
add_library(mlq_sampling STATIC ${CMAKE_CURRENT_LIST_DIR}/sampling.c)
target_include_directories(mlq_sampling PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_sampling PUBLIC mlq_engine PRIVATE mlq_warnings m)
