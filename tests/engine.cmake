# The engine: gradient checks, optimizer rules, parity with PyTorch fixtures.
mlq_add_test(test_net SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_net.c LIBS mlq_engine)
