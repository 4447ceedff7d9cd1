# The history commands (runs, show, metrics, compare, export, rm, gc) read the store;
# export decodes checkpoints (mlq_checkpoint), rebuilds the model's tensor table
# (mlq_spec_model) and writes HDF5.
target_link_libraries(mlq PRIVATE mlq_store mlq_checkpoint mlq_spec_model PkgConfig::HDF5 PkgConfig::JANSSON)
