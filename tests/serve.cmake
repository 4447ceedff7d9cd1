# Serving (issue 13): deploy, infer, rollover and a replica killed under load,
# against real mlq-broker, mlq-trainer and mlq processes.
mlq_add_test(test_serve SOURCES test_serve.c broker_harness.c
             LIBS mlq_client mlq_runner mlq_store mlq_common PkgConfig::ZMQ PkgConfig::HDF5
                  Threads::Threads
             TIMEOUT 240)
add_dependencies(test_serve mlq-broker mlq-trainer mlq)
# The Python module and the installed libmlq (docs/serving.md, docs/python.md).
add_test(NAME test_python COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_python.py
         ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(test_python PROPERTIES TIMEOUT 120)
add_test(NAME test_client_install COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_client_install.sh
         ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(test_client_install PROPERTIES TIMEOUT 120)
# A sanitized libmlq needs a sanitized program to load it.
if(MLQ_SANITIZE)
  set_tests_properties(test_client_install PROPERTIES
                       ENVIRONMENT "EXAMPLE_CFLAGS=-fsanitize=address,undefined")
endif()
# mlq generate --deployment: a language model's text drawn through a deployment,
# the same as the generate job's (issue 15).
add_test(NAME generate_deploy COMMAND ${CMAKE_CURRENT_LIST_DIR}/generate_deploy.sh
         ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(generate_deploy PROPERTIES TIMEOUT 300)
