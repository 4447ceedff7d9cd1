# mlq submit, wait, cancel, queue, workers, eval, predict: ZeroMQ to the broker.
target_link_libraries(mlq PRIVATE PkgConfig::ZMQ mlq_job_memory)
# The model check before a submit (trainer/spec_model.h, over the engine's op table).
target_link_libraries(mlq PRIVATE mlq_spec_model)
