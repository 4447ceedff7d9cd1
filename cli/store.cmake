# The history commands (runs, show, metrics, compare, export, rm, gc) read the store;
# export decodes checkpoints (mlq_checkpoint) and writes HDF5.
target_link_libraries(mlq PRIVATE mlq_store mlq_checkpoint PkgConfig::HDF5 PkgConfig::JANSSON)
