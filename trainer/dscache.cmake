# The cache of pushed datasets, the fetch that fills it and the upload of
# predict outputs (trainer/dscache.h, fetch.h, upload.h).
add_library(mlq_dscache STATIC ${CMAKE_CURRENT_LIST_DIR}/dscache.c ${CMAKE_CURRENT_LIST_DIR}/fetch.c
            ${CMAKE_CURRENT_LIST_DIR}/upload.c)
target_include_directories(mlq_dscache PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_dscache PUBLIC mlq_common PRIVATE mlq_warnings m)
