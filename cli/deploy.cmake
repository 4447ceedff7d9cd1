# mlq deploy, deployments, undeploy, infer: over libmlq (client/), HDF5 inputs
# read as predict reads them (trainer/dataset.h).
target_link_libraries(mlq PRIVATE mlq_client mlq_dataset PkgConfig::HDF5)
# mlq generate --deployment: the generate job's sampler (trainer/sampling.h).
target_link_libraries(mlq PRIVATE mlq_sampling)
