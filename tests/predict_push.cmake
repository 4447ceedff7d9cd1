# Predict outputs back to the client (tests/predict_push.sh, issue 16).
add_test(NAME predict_push COMMAND ${CMAKE_CURRENT_LIST_DIR}/predict_push.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(predict_push PROPERTIES TIMEOUT 180)
