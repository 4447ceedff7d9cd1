# The engine: RNG, dense network and optimizers over flat float buffers.
add_library(mlq_engine STATIC
  ${CMAKE_CURRENT_SOURCE_DIR}/rng.c
  ${CMAKE_CURRENT_SOURCE_DIR}/net.c
  ${CMAKE_CURRENT_SOURCE_DIR}/optim.c)
target_include_directories(mlq_engine PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mlq_engine PUBLIC mlq_common PkgConfig::OPENBLAS m PRIVATE mlq_warnings)
# The element-wise loops (activations, optimizers) are written to vectorise:
# the dynamic cost model lets GCC do it at -O2 too. No -ffast-math: results
# must stay IEEE and match PyTorch; -fno-math-errno only lets sqrtf inline.
target_compile_options(mlq_engine PRIVATE
  $<$<NOT:$<CONFIG:Debug>>:-ftree-vectorize -fvect-cost-model=dynamic> -fno-math-errno)
# net_set_threads' worker threads.
target_link_libraries(mlq_engine PUBLIC Threads::Threads)
