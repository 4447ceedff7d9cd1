# Learning-rate schedules (trainer/schedule.h): pure arithmetic over the
# spec's schedule, unit-tested against PyTorch's sequences.
add_library(mlq_schedule STATIC ${CMAKE_CURRENT_LIST_DIR}/schedule.c)
target_include_directories(mlq_schedule PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(mlq_schedule PUBLIC mlq_common PRIVATE mlq_warnings m)
