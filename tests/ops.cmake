# The layer ops' kernels: finite differences and PyTorch 1.13 fixtures
# (tests/parity/ops_fixtures.json; regenerate with gen_ops_fixtures.py).
mlq_add_test(test_ops_kernels SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_ops_kernels.c
  LIBS mlq_engine PkgConfig::JANSSON)
# Whole conv models through the model API against PyTorch 1.13: the LeNet and
# conv+BN recipes, scaled down, 5 steps of SGD and Adam (cnn_fixtures.json).
mlq_add_test(test_cnn_parity SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cnn_parity.c
  LIBS mlq_engine PkgConfig::JANSSON)
# The sequence ops (embedding, lstm, gru, ...) through their op_def against
# PyTorch 1.13 (tests/parity/seq_fixtures.json; regenerate with
# gen_seq_fixtures.py).
mlq_add_test(test_seq_parity SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_seq_parity.c
  LIBS mlq_engine PkgConfig::JANSSON)
