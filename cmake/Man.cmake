# Man pages for the three programs, made from their --help and --version by
# Debian's help2man (package help2man) at build time, installed to man1 and
# so shipped in the .deb; and bash completion for them. Without help2man the
# build goes on without the pages (said once at configure time).
find_program(HELP2MAN help2man)
if(HELP2MAN)
  set(MLQ_MAN_PAGES)
  foreach(prog mlq mlq-broker mlq-trainer)
    if(TARGET ${prog})
      set(page ${PROJECT_BINARY_DIR}/man/${prog}.1)
      add_custom_command(
        OUTPUT ${page}
        COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
        COMMAND ${HELP2MAN} --no-info --no-discard-stderr --section 1
                --name "part of mlq, machine learning as a service"
                --output ${page} $<TARGET_FILE:${prog}>
        DEPENDS ${prog}
        COMMENT "help2man ${prog}"
        VERBATIM)
      list(APPEND MLQ_MAN_PAGES ${page})
    endif()
  endforeach()
  add_custom_target(man ALL DEPENDS ${MLQ_MAN_PAGES})
  install(FILES ${MLQ_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
else()
  message(STATUS "help2man not found: no man pages (apt-get install help2man)")
endif()
install(FILES ${PROJECT_SOURCE_DIR}/scripts/mlq.bash-completion
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME mlq)
# The daemons' completions live in the same file; bash-completion loads a
# program's completion by its name, so each name points at it.
foreach(prog mlq-broker mlq-trainer)
  install(CODE "
    set(dir \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_DATADIR}/bash-completion/completions\")
    execute_process(COMMAND \${CMAKE_COMMAND} -E create_symlink mlq \"\${dir}/${prog}\")")
endforeach()
