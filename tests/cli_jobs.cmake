# The job commands as a new user meets them, over mlq up's broker and trainer (tests/cli_jobs.sh).
add_test(NAME cli_jobs COMMAND ${CMAKE_CURRENT_LIST_DIR}/cli_jobs.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(cli_jobs PROPERTIES TIMEOUT 180)
