# mlq submit, wait, cancel, queue, workers, eval, predict: ZeroMQ to the broker.
target_link_libraries(mlq PRIVATE PkgConfig::ZMQ mlq_job_memory)
