target_link_libraries(mlq PRIVATE mlq_store)
