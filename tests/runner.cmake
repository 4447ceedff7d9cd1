add_library(mlq_testutil STATIC ${CMAKE_CURRENT_LIST_DIR}/testutil.c)
target_include_directories(mlq_testutil PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_testutil PUBLIC PkgConfig::HDF5 PRIVATE mlq_warnings m)

mlq_add_test(test_train SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_train.c
             LIBS mlq_runner mlq_testutil)
add_dependencies(test_train mlq-trainer)

mlq_add_test(test_augment SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_augment.c
             LIBS mlq_runner mlq_testutil)

mlq_add_test(test_examples SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_examples.c
             LIBS mlq_spec_model)
