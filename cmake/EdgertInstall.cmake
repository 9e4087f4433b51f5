# Install rules of libedgert (EDGERT_INSTALL; off in the wheel build, which ships only
# the extension modules). Layout (GNUInstallDirs):
#   lib/libedgert.so.X.Y[.Z], lib/libedgert.so   (component runtime / development)
#   lib/libedgert.a, include/edgert/edgert.h, edgert.hpp
#   lib/cmake/edgert/edgertConfig.cmake ...      find_package(edgert): edgert::edgert, edgert::edgert_static
#   lib/pkgconfig/edgert.pc                      pkg-config edgert [--static]
#   bin/edgert_edge_node, ...                    (component firmware, see firmware/CMakeLists.txt)
# Public headers are the C API (edgert.h) and its RAII wrappers (edgert.hpp); kernels.hpp
# is an internal C++ interface whose symbols the shared library does not export.
include(CMakePackageConfigHelpers)
set(EDGERT_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/edgert)

install(TARGETS edgert_shared EXPORT edgertTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT development
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
install(TARGETS edgert_static EXPORT edgertStaticTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development)
install(FILES ${PROJECT_SOURCE_DIR}/src/include/edgert/edgert.h ${PROJECT_SOURCE_DIR}/src/include/edgert/edgert.hpp
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/edgert COMPONENT development)
install(EXPORT edgertTargets NAMESPACE edgert:: DESTINATION ${EDGERT_CMAKE_INSTALL_DIR} COMPONENT development)
install(EXPORT edgertStaticTargets NAMESPACE edgert:: DESTINATION ${EDGERT_CMAKE_INSTALL_DIR}
  COMPONENT development)

# 0.x: a minor release may break the API, so 0.1 satisfies only 0.1.*; from 1.0 on, SameMajorVersion.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(EDGERT_COMPATIBILITY SameMinorVersion)
else()
  set(EDGERT_COMPATIBILITY SameMajorVersion)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/edgertConfig.cmake.in
  ${PROJECT_BINARY_DIR}/edgertConfig.cmake INSTALL_DESTINATION ${EDGERT_CMAKE_INSTALL_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/edgertConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${EDGERT_COMPATIBILITY})
install(FILES ${PROJECT_BINARY_DIR}/edgertConfig.cmake ${PROJECT_BINARY_DIR}/edgertConfigVersion.cmake
  DESTINATION ${EDGERT_CMAKE_INSTALL_DIR} COMPONENT development)

# pkg-config. The prefix is found from the .pc file's own place, so `cmake --install
# --prefix DIR` and moving the tree both work. Libs.private lists what libedgert.a needs
# on a static link: the C++ runtime (what C++ links beyond C: -lstdc++ -lm with GCC),
# the OpenMP runtime, threads, and the static CUDA runtime when CUDA kernels are built.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(EDGERT_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH EDGERT_PC_UP "/r/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/r")
  string(REGEX REPLACE "/$" "" EDGERT_PC_UP "${EDGERT_PC_UP}")
  set(EDGERT_PC_PREFIX "\${pcfiledir}/${EDGERT_PC_UP}")
endif()
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(EDGERT_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(EDGERT_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
set(EDGERT_PC_LIBS_PRIVATE "")
foreach(lib ${CMAKE_CXX_IMPLICIT_LINK_LIBRARIES})
  if(NOT lib IN_LIST CMAKE_C_IMPLICIT_LINK_LIBRARIES AND NOT lib MATCHES "^gcc")
    list(APPEND EDGERT_PC_LIBS_PRIVATE -l${lib})
  endif()
endforeach()
if(EDGERT_LIB_OPENMP)
  foreach(lib ${OpenMP_CXX_LIB_NAMES})
    list(APPEND EDGERT_PC_LIBS_PRIVATE -l${lib})
  endforeach()
endif()
if(EDGERT_HAS_OPENSSL_CRYPTO)
  list(APPEND EDGERT_PC_LIBS_PRIVATE -lcrypto)
endif()
if(EDGERT_ED25519 STREQUAL "sodium")
  list(APPEND EDGERT_PC_LIBS_PRIVATE -lsodium)
endif()
if(EDGERT_HAS_CUDA)
  list(APPEND EDGERT_PC_LIBS_PRIVATE -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt)
endif()
find_package(Threads REQUIRED)  # cached by src/: sets CMAKE_USE_PTHREADS_INIT in this scope
if(CMAKE_USE_PTHREADS_INIT)
  list(APPEND EDGERT_PC_LIBS_PRIVATE -pthread)
endif()
list(REMOVE_DUPLICATES EDGERT_PC_LIBS_PRIVATE)
list(JOIN EDGERT_PC_LIBS_PRIVATE " " EDGERT_PC_LIBS_PRIVATE)
configure_file(${PROJECT_SOURCE_DIR}/cmake/edgert.pc.in ${PROJECT_BINARY_DIR}/edgert.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/edgert.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)
