# LLAMABIND_PORTABLE: the build that ships in wheels. The top-level CMakeLists.txt calls
# llamabind_portable_setup() before adding llama.cpp, llamabind_portable_libraries() right
# after it, and llamabind_portable_install() with the Python extension.
#
# A default build links one CPU backend, compiled for the build machine (-march=native),
# into the extension: fastest there, but it may die with SIGILL on an older CPU. The portable
# build instead uses ggml's own mechanism for this: ggml and llama as shared libraries, every
# backend a module loaded at run time (GGML_BACKEND_DL), and the CPU backend built once per
# instruction-set level (GGML_CPU_ALL_VARIANTS: x64, sse42, ..., haswell, skylakex, icelake,
# ..., sapphirerapids on x86-64; armv8.0 ... armv9.2 on Linux arm64; apple_m1 ... apple_m4).
# Each CPU module has a score function that checks the CPU; ggml loads the best one.
# Everything is installed beside llamabind._core with $ORIGIN / @loader_path run paths, and
# llamabind::ensure_backend() loads the modules from the directory of libggml.

macro(llamabind_portable_setup)
  set(BUILD_SHARED_LIBS ON CACHE BOOL "LLAMABIND_PORTABLE: ggml and llama as shared libraries" FORCE)
  set(GGML_BACKEND_DL ON CACHE BOOL "LLAMABIND_PORTABLE: backends as loadable modules" FORCE)
  set(GGML_NATIVE OFF CACHE BOOL "LLAMABIND_PORTABLE: no -march=native" FORCE)
  # ggml has no variant list for Windows on arm64; there one generic CPU module is built.
  set(_llamabind_variants_default ON)
  if(WIN32 AND CMAKE_SYSTEM_PROCESSOR MATCHES "ARM64|arm64|aarch64")
    set(_llamabind_variants_default OFF)
  endif()
  option(LLAMABIND_CPU_VARIANTS "LLAMABIND_PORTABLE: one CPU module per instruction-set level (GGML_CPU_ALL_VARIANTS)"
    ${_llamabind_variants_default})
  set(GGML_CPU_ALL_VARIANTS ${LLAMABIND_CPU_VARIANTS} CACHE BOOL "set by LLAMABIND_CPU_VARIANTS" FORCE)
  # The run paths the installed libraries and modules find each other by.
  if(APPLE)
    set(CMAKE_INSTALL_RPATH "@loader_path")
  else()
    set(CMAKE_INSTALL_RPATH "$ORIGIN")
  endif()
endmacro()

# After llama.cpp is added: one directory and one file per library, the CUDA module's run path.
function(llamabind_portable_libraries)
  # In the build tree too the libraries sit beside the backend modules (ggml writes those to
  # ${CMAKE_BINARY_DIR}/bin), so programs run from the build tree find them the same way.
  set_target_properties(llama ggml ggml-base PROPERTIES
    LIBRARY_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin" RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
  # One file per library: a wheel cannot hold the libfoo.so -> libfoo.so.0 -> libfoo.so.0.9
  # symlink chain (each link would become a copy), so the versions are dropped and each
  # library's file name is its soname.
  foreach(_lib llama ggml ggml-base)
    set_property(TARGET ${_lib} PROPERTY VERSION)
    set_property(TARGET ${_lib} PROPERTY SOVERSION)
  endforeach()
  if(TARGET ggml-cuda)
    # CUDA wheels do not bundle the CUDA runtime and cuBLAS: they depend on NVIDIA's own wheels
    # (nvidia-cuda-runtime / nvidia-cublas, which install into site-packages/nvidia/...), found
    # from site-packages/llamabind through these run paths or loaded in advance by
    # llamabind/_runtime.py, and otherwise through the system's library path.
    set_property(TARGET ggml-cuda APPEND PROPERTY INSTALL_RPATH
      "$ORIGIN/../nvidia/cu13/lib" "$ORIGIN/../nvidia/cublas/lib" "$ORIGIN/../nvidia/cuda_runtime/lib")
  endif()
endfunction()

# Installs the shared libraries and every backend module into `destination` (the Python
# package directory in a wheel).
function(llamabind_portable_install destination)
  set(_libs llama ggml ggml-base)
  foreach(_backend IN LISTS GGML_AVAILABLE_BACKENDS)
    if(TARGET ${_backend})
      list(APPEND _libs ${_backend})
    endif()
  endforeach()
  if(TARGET ggml-cuda)
    # Tells llamabind/_runtime.py which CUDA runtime to look for in NVIDIA's wheels.
    find_package(CUDAToolkit REQUIRED)
    file(WRITE "${CMAKE_CURRENT_BINARY_DIR}/cuda_runtime.txt" "${CUDAToolkit_VERSION_MAJOR}\n")
    install(FILES "${CMAKE_CURRENT_BINARY_DIR}/cuda_runtime.txt" DESTINATION "${destination}" COMPONENT python)
  endif()
  install(TARGETS ${_libs}
    LIBRARY DESTINATION "${destination}" COMPONENT python
    RUNTIME DESTINATION "${destination}" COMPONENT python
    ARCHIVE DESTINATION "${destination}/_devlib" COMPONENT portable-devel EXCLUDE_FROM_ALL)
  message(STATUS "llamabind: portable build; installs ${_libs} into ${destination}")
endfunction()
