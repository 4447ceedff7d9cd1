# Install rules and the Debian package (issue 5).
#   cmake --install build [--prefix P]    programs, units, sysusers/tmpfiles, mlq.conf, docs
#   cd build && cpack -G DEB              mlq_<version>_amd64.deb (with
#                                         /usr/share/doc/mlq/copyright: MIT)
# Directories for systemd files come from `pkg-config systemd`, taken relative
# to the install prefix unless it is /usr; `cmake --install build --prefix
# /tmp/x` stays inside /tmp/x, DESTDIR stages as usual. Override the
# directories with the cache variables below.

foreach(prog mlq mlq-broker mlq-trainer)
  # Parts may install their own program too; installing twice is harmless.
  if(TARGET ${prog})
    install(TARGETS ${prog} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# pkg-config systemd's variable var, with prefix and root_prefix moved to the
# install prefix (except for /usr, where Debian's own values apply as they are).
function(mlq_systemd_dir out var fallback)
  set(defines)
  if(NOT CMAKE_INSTALL_PREFIX STREQUAL "/usr")
    set(defines --define-variable=prefix=${CMAKE_INSTALL_PREFIX}
                --define-variable=root_prefix=${CMAKE_INSTALL_PREFIX}
                --define-variable=rootprefix=${CMAKE_INSTALL_PREFIX})
  endif()
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} ${defines} --variable=${var} systemd
                  OUTPUT_VARIABLE dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR dir STREQUAL "")
    set(dir ${CMAKE_INSTALL_PREFIX}/${fallback})
  endif()
  set(${out} ${dir} PARENT_SCOPE)
endfunction()

mlq_systemd_dir(unit_dir systemdsystemunitdir lib/systemd/system)
mlq_systemd_dir(sysusers_dir sysusersdir lib/sysusers.d)
mlq_systemd_dir(tmpfiles_dir tmpfilesdir lib/tmpfiles.d)
set(MLQ_SYSTEMD_UNIT_DIR ${unit_dir} CACHE PATH "Where systemd unit files go")
set(MLQ_SYSUSERS_DIR ${sysusers_dir} CACHE PATH "Where sysusers.d files go")
set(MLQ_TMPFILES_DIR ${tmpfiles_dir} CACHE PATH "Where tmpfiles.d files go")

# Destinations under the prefix become relative, so that `cmake --install
# --prefix P` and CPack (prefix /usr) move them along.
function(mlq_rel out dir)
  string(FIND "${dir}" "${CMAKE_INSTALL_PREFIX}/" at)
  if(at EQUAL 0)
    string(LENGTH "${CMAKE_INSTALL_PREFIX}/" n)
    string(SUBSTRING "${dir}" ${n} -1 dir)
  endif()
  set(${out} ${dir} PARENT_SCOPE)
endfunction()
mlq_rel(unit_dest ${MLQ_SYSTEMD_UNIT_DIR})
mlq_rel(sysusers_dest ${MLQ_SYSUSERS_DIR})
mlq_rel(tmpfiles_dest ${MLQ_TMPFILES_DIR})

# The unit files in systemd/ name /usr/bin/mlq*; at install time (when CPack's
# prefix is known) point them at the real bindir.
foreach(unit mlq-broker.service mlq-trainer@.service)
  set(src ${PROJECT_SOURCE_DIR}/systemd/${unit})
  set(gen ${PROJECT_BINARY_DIR}/systemd/${unit})
  install(CODE "
    file(READ \"${src}\" text)
    string(REPLACE \"/usr/bin/mlq\" \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/mlq\"
           text \"\${text}\")
    file(WRITE \"${gen}\" \"\${text}\")")
  install(FILES ${gen} DESTINATION ${unit_dest})
endforeach()
install(FILES systemd/mlq.sysusers DESTINATION ${sysusers_dest} RENAME mlq.conf)
install(FILES systemd/mlq.tmpfiles DESTINATION ${tmpfiles_dest} RENAME mlq.conf)
# mlq.conf: /etc/mlq for the prefix /usr (packages), else PREFIX/etc/mlq, so a
# scratch prefix never touches the host's /etc. The programs read
# /etc/mlq/mlq.conf, or the file that MLQ_CONFIG names.
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(dir /etc/mlq)
  else()
    set(dir \${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_SYSCONFDIR}/mlq)
  endif()
  file(INSTALL DESTINATION \"\${dir}\" TYPE FILE
       FILES \"${PROJECT_SOURCE_DIR}/systemd/mlq.conf\")")

file(GLOB MLQ_DOCS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
if(EXISTS ${PROJECT_SOURCE_DIR}/README.md)
  list(APPEND MLQ_DOCS ${PROJECT_SOURCE_DIR}/README.md)
endif()
install(FILES ${MLQ_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})

# ---- Debian package -----------------------------------------------------------
set(CPACK_PACKAGE_NAME mlq)
set(CPACK_PACKAGE_VENDOR "mlq")
set(CPACK_PACKAGE_CONTACT "mlq maintainers <mlq@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "machine learning as a service: a job broker and trainers")
set(CPACK_PACKAGE_DESCRIPTION
    "mlq queues training jobs durably in a broker and hands them over ZeroMQ to\n"
    "trainers that read HDF5 datasets, train dense networks with OpenBLAS and\n"
    "record metrics and checkpoints in SQLite. It ships hardened systemd units and\n"
    "enables nothing by itself.")
string(REPLACE ";" "" CPACK_PACKAGE_DESCRIPTION "${CPACK_PACKAGE_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_SET_DESTDIR ON) # absolute destinations (/lib/systemd/system, /etc/mlq)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT) # mlq_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Runtime libraries only, computed from the binaries by dpkg-shlibdeps (dpkg-dev):
# libzmq5, libsqlite3-0, libhdf5-103, libjansson4, libssl3 (libcrypto's SHA-256,
# common/sha256.c), libxxhash0 (chunk sums, common/chunk_sum.c), ...
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# import mlq (docs/python.md) needs pyzmq, and numpy for infer.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3, python3-zmq, python3-numpy")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/scripts/deb/postinst
    ${PROJECT_SOURCE_DIR}/scripts/deb/prerm
    ${PROJECT_SOURCE_DIR}/scripts/deb/postrm
    ${PROJECT_SOURCE_DIR}/scripts/deb/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
include(CPack)

# /usr/share/doc/mlq/copyright, which Debian's policy asks of every package:
# who holds the copyright and the licence, MIT (LICENSE; Debian names it
# Expat), its text indented and blank lines as " ." as the copyright format
# writes them. Made from LICENSE so that the two cannot differ.
file(READ ${PROJECT_SOURCE_DIR}/LICENSE MLQ_LICENSE_INDENTED)
string(STRIP "${MLQ_LICENSE_INDENTED}" MLQ_LICENSE_INDENTED)
string(REPLACE "\n\n" "\n.\n" MLQ_LICENSE_INDENTED "${MLQ_LICENSE_INDENTED}")
string(REPLACE "\n" "\n " MLQ_LICENSE_INDENTED " ${MLQ_LICENSE_INDENTED}")
set(MLQ_CONTACT ${CPACK_PACKAGE_CONTACT})
configure_file(${PROJECT_SOURCE_DIR}/scripts/deb/copyright.in ${PROJECT_BINARY_DIR}/copyright
               @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/copyright ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

# The Python module (docs/python.md): where Debian's python3 finds it for the
# prefix /usr (the package), PREFIX/lib/python3/dist-packages otherwise.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/python/mlq DESTINATION lib/python3/dist-packages
        PATTERN "__pycache__" EXCLUDE)
