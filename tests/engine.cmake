# The engine: gradient checks, optimizer rules, parity with PyTorch fixtures.
mlq_add_test(test_net SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_net.c LIBS mlq_engine mlq_spec_model)
mlq_add_test(test_optim SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_optim.c LIBS mlq_engine mlq_spec_model)
mlq_add_test(test_parity SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_parity.c LIBS mlq_engine mlq_spec_model)
# Every registered op (engine/ops/registry.c) against finite differences,
# the fused heads, the model's graph and its shape errors.
mlq_add_test(test_ops_grad SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_ops_grad.c LIBS mlq_engine)
# Typed layers in the spec and the engine's checks of a spec's model.
mlq_add_test(test_spec_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_spec_model.c
             LIBS mlq_spec_model)
