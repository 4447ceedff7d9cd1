# mlq dataset: import IDX and CSV into HDF5, describe a dataset.
# mlq_import: reading the imported files (cli/import.h), apart from the command.
add_library(mlq_import STATIC ${CMAKE_CURRENT_LIST_DIR}/import.c)
target_include_directories(mlq_import PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_import PUBLIC PkgConfig::ZLIB PRIVATE mlq_common mlq_warnings m)
target_link_libraries(mlq PRIVATE mlq_import mlq_dataset PkgConfig::HDF5 PkgConfig::ZLIB)
