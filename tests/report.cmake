# mlq report through a real broker and trainers, then in headless Chromium
# (tests/report.sh; skipped, exit 77, only where no Chromium starts).
add_test(NAME report COMMAND ${CMAKE_CURRENT_LIST_DIR}/report.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(report PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77)
# Bash completion and the man pages (tests/completion.sh).
add_test(NAME completion COMMAND ${CMAKE_CURRENT_LIST_DIR}/completion.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(completion PROPERTIES TIMEOUT 60)
# mlq report --sweep of an ASHA sweep, in headless Chromium (tests/report_sweep.sh).
add_test(NAME report_sweep COMMAND ${CMAKE_CURRENT_LIST_DIR}/report_sweep.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(report_sweep PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77)
