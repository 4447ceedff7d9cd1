# mlq up's endpoint and database, found by the other commands while it runs (tests/up_endpoint.sh).
add_test(NAME up_endpoint COMMAND ${CMAKE_CURRENT_LIST_DIR}/up_endpoint.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(up_endpoint PROPERTIES TIMEOUT 120)
