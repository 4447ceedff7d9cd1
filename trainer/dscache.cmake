# The cache of pushed datasets and the fetch that fills it (trainer/dscache.h, fetch.h).
add_library(mlq_dscache STATIC ${CMAKE_CURRENT_LIST_DIR}/dscache.c ${CMAKE_CURRENT_LIST_DIR}/fetch.c)
target_include_directories(mlq_dscache PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_dscache PUBLIC mlq_common PRIVATE mlq_warnings m)
