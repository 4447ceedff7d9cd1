# The engine's thread team: slices claimed by whoever runs, a held
# (descheduled) worker that does not stall the caller, and the dense net's
# bits for a given thread count with workers held or a core busy.
mlq_add_test(test_team SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_team.c LIBS mlq_engine)
