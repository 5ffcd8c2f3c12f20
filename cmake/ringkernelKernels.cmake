# ringkernelKernels.cmake — ringkernel_add_kernels(<target> <source>...): one dialect source file,
# every backend. Installed with the package (find_package(ringkernel) includes it) and used in-tree.
#
# Each source (C, in the kernel dialect, defining its kernels with RK_KERNEL) is compiled
#  - by the target's C compiler into the target: the CPU backend's handlers and the descriptors;
#  - when a CUDA compiler is found, also by nvcc, with the device runtime, into a fatbin (PTX and
#    SASS for RINGKERNEL_CUDA_ARCHITECTURES, default "75-virtual;90-real") that the C compilation
#    embeds in the object (RK_KERNEL_FATBIN), filling the descriptors' cuda_image and cuda_entry.
# Without nvcc (or with RINGKERNEL_CUDA=OFF) the target still builds, and its kernels run on the
# CPU backend. The target must link ringkernel::rk (or ringkernel::rk_static) for the headers.
#
# Variables read: RINGKERNEL_CUDA (AUTO, ON, OFF; default AUTO), RINGKERNEL_CUDA_ARCHITECTURES,
# RINGKERNEL_NVCC (the compiler; found from CMAKE_CUDA_COMPILER, or by check_language(CUDA)).
# Set by whoever includes this file: RINGKERNEL_INCLUDE_DIR (the public headers) and
# RINGKERNEL_DEVICE_RUNTIME_DIR (the directory holding device/persistent.cuh).
include_guard(GLOBAL)
include(CheckLanguage)

set(RINGKERNEL_CUDA "AUTO" CACHE STRING "ringkernel_add_kernels: build device code (AUTO, ON, OFF)")
set(RINGKERNEL_CUDA_ARCHITECTURES "75-virtual;90-real" CACHE STRING
    "ringkernel_add_kernels: CUDA architectures of the device code (CMAKE_CUDA_ARCHITECTURES syntax)")

function(_ringkernel_find_nvcc out)
  if(RINGKERNEL_CUDA STREQUAL "OFF")
    set(${out} "" PARENT_SCOPE)
    return()
  endif()
  if(RINGKERNEL_NVCC)
    set(${out} "${RINGKERNEL_NVCC}" PARENT_SCOPE)
    return()
  endif()
  if(NOT CMAKE_CUDA_COMPILER)
    check_language(CUDA) # a real test: the compiler must work with its host compiler
  endif()
  if(CMAKE_CUDA_COMPILER)
    set(${out} "${CMAKE_CUDA_COMPILER}" PARENT_SCOPE)
  elseif(RINGKERNEL_CUDA STREQUAL "ON")
    message(FATAL_ERROR "ringkernel_add_kernels: RINGKERNEL_CUDA=ON but no working CUDA compiler was found")
  else()
    set(${out} "" PARENT_SCOPE)
  endif()
endfunction()

# "75-virtual;90-real;80" -> nvcc -gencode options
function(_ringkernel_gencode out)
  set(opts "")
  foreach(a IN LISTS RINGKERNEL_CUDA_ARCHITECTURES)
    if(a MATCHES "^([0-9]+)-virtual$")
      list(APPEND opts "-gencode=arch=compute_${CMAKE_MATCH_1},code=compute_${CMAKE_MATCH_1}")
    elseif(a MATCHES "^([0-9]+)-real$")
      list(APPEND opts "-gencode=arch=compute_${CMAKE_MATCH_1},code=sm_${CMAKE_MATCH_1}")
    elseif(a MATCHES "^([0-9]+)$")
      list(APPEND opts "-gencode=arch=compute_${a},code=[compute_${a},sm_${a}]")
    else()
      message(FATAL_ERROR "ringkernel_add_kernels: bad architecture '${a}' in RINGKERNEL_CUDA_ARCHITECTURES")
    endif()
  endforeach()
  set(${out} "${opts}" PARENT_SCOPE)
endfunction()

function(ringkernel_add_kernels target)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "ringkernel_add_kernels: no target named '${target}'")
  endif()
  if(NOT ARGN)
    message(FATAL_ERROR "ringkernel_add_kernels(${target}): no source files")
  endif()
  _ringkernel_find_nvcc(nvcc)
  set(host_flags "")
  if(CMAKE_CUDA_HOST_COMPILER)
    set(host_flags "-ccbin=${CMAKE_CUDA_HOST_COMPILER}")
  endif()
  _ringkernel_gencode(gencode)
  get_target_property(tgt_dir ${target} BINARY_DIR)
  foreach(src IN LISTS ARGN)
    get_filename_component(abs "${src}" ABSOLUTE)
    target_sources(${target} PRIVATE "${abs}")
    set_source_files_properties("${abs}" TARGET_DIRECTORY ${target} PROPERTIES LANGUAGE C)
    if(NOT nvcc)
      continue()
    endif()
    get_filename_component(stem "${abs}" NAME_WE)
    string(MD5 tag "${abs}")
    string(SUBSTRING "${tag}" 0 8 tag)
    set(fatbin "${tgt_dir}/ringkernel_kernels/${target}/${stem}-${tag}.fatbin")
    file(MAKE_DIRECTORY "${tgt_dir}/ringkernel_kernels/${target}")
    add_custom_command(OUTPUT "${fatbin}"
      COMMAND "${nvcc}" -x cu -fatbin -std=c++17 ${host_flags} ${gencode}
              "-I${RINGKERNEL_INCLUDE_DIR}" "-I${RINGKERNEL_DEVICE_RUNTIME_DIR}"
              -include device/persistent.cuh -MD -MF "${fatbin}.d" -o "${fatbin}" "${abs}"
      DEPENDS "${abs}" DEPFILE "${fatbin}.d"
      COMMENT "ringkernel: device code of ${stem} (nvcc)" VERBATIM)
    target_sources(${target} PRIVATE "${fatbin}")
    set_source_files_properties("${abs}" TARGET_DIRECTORY ${target} PROPERTIES
      COMPILE_DEFINITIONS "RK_KERNEL_FATBIN=\"${fatbin}\"" OBJECT_DEPENDS "${fatbin}")
  endforeach()
endfunction()
