# mlq top in a tmux pane over a real broker and trainers (tests/top.sh).
add_test(NAME top COMMAND ${CMAKE_CURRENT_LIST_DIR}/top.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(top PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77)
