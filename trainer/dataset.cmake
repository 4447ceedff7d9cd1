# Datasets: the HDF5 reader (trainer/dataset.h).
add_library(mlq_dataset STATIC ${CMAKE_CURRENT_SOURCE_DIR}/dataset.c)
target_include_directories(mlq_dataset PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mlq_dataset PUBLIC mlq_engine mlq_common PkgConfig::HDF5
  PRIVATE PkgConfig::LZF mlq_warnings m)
