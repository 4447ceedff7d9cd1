# Pushed datasets against a real mlq-broker (tests/dataset_push.sh, issue 16).
add_test(NAME dataset_push COMMAND ${CMAKE_CURRENT_LIST_DIR}/dataset_push.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(dataset_push PROPERTIES TIMEOUT 180)
