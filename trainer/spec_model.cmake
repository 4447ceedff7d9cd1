# The spec-to-engine translation (trainer/spec_model.h): what the runner and
# the engine's tests use to build engine objects from a job spec.
add_library(mlq_spec_model STATIC ${CMAKE_CURRENT_LIST_DIR}/spec_model.c)
target_include_directories(mlq_spec_model PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_spec_model PUBLIC mlq_engine mlq_common PRIVATE mlq_warnings)
