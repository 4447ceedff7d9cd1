target_link_libraries(mlq PRIVATE mlq_store)
# broker.h only (mlq-broker's exit codes): mlq up links no broker code.
target_include_directories(mlq PRIVATE ${PROJECT_SOURCE_DIR}/broker)
