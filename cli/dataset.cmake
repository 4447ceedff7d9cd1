# mlq dataset: import IDX and CSV into HDF5, describe a dataset.
target_link_libraries(mlq PRIVATE mlq_dataset PkgConfig::HDF5 PkgConfig::ZLIB)
