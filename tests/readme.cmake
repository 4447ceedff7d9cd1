# The README's five-minute tour, run as written (tests/readme_tour.sh): at most 200 s for the tour (about 70 s on a busy 2-core machine).
add_test(NAME readme_tour COMMAND ${CMAKE_CURRENT_LIST_DIR}/readme_tour.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR} 200)
set_tests_properties(readme_tour PROPERTIES TIMEOUT 260 SKIP_RETURN_CODE 77)
# Under ASan at -O0 its training takes many times as long; the plain build keeps the README true,
# and the programs it runs are the sanitized build's other tests' programs.
if(MLQ_SANITIZE)
  set_tests_properties(readme_tour PROPERTIES DISABLED TRUE)
endif()
