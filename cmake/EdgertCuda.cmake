# Decides whether the CUDA kernels are built: EDGERT_CUDA=AUTO|ON|OFF.
# CMake looks for nvcc only on PATH; the usual install location is tried too.
set(EDGERT_HAS_CUDA OFF)
if(NOT EDGERT_CUDA STREQUAL "OFF")
  if(NOT DEFINED ENV{CUDACXX} AND NOT CMAKE_CUDA_COMPILER AND EXISTS "/usr/local/cuda/bin/nvcc")
    set(CMAKE_CUDA_COMPILER "/usr/local/cuda/bin/nvcc" CACHE FILEPATH "")
  endif()
  if(CMAKE_CROSSCOMPILING)
    message(STATUS "edgert: CUDA disabled when cross-compiling")
  else()
    include(CheckLanguage)
    check_language(CUDA)
    if(CMAKE_CUDA_COMPILER)
      if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
        # 72: Jetson AGX Xavier (needs CUDA < 13), 75: T4/Turing, 80: A100,
        # 86: RTX 30xx, 87: Jetson Orin, 89: L4/RTX 40xx, 90: H100/H200.
        # CUDA 13 dropped <= 72, so the default list starts at 75.
        set(CMAKE_CUDA_ARCHITECTURES "75;80;86;87;89;90" CACHE STRING "")
      endif()
      enable_language(CUDA)
      find_package(CUDAToolkit REQUIRED)
      set(EDGERT_HAS_CUDA ON)
    elseif(EDGERT_CUDA STREQUAL "ON")
      message(FATAL_ERROR "EDGERT_CUDA=ON but no CUDA compiler was found (set CUDACXX)")
    endif()
  endif()
endif()
message(STATUS "edgert: CUDA kernels ${EDGERT_HAS_CUDA}")
