# check_custom_kernel.cmake — examples/custom_kernel built the way a user builds it: install this
# build into a fresh prefix, configure and build the example against the installed package
# (find_package + ringkernel_add_kernels), run it (CPU backend here); then the pkg-config recipe of
# docs/first-kernel.md (two commands) against the same prefix, and run that program too. Where nvcc
# is given, both programs must carry device code for sm_90 (checked with cuobjdump when one is
# found, else by the fatbin's embedded ELF marker).
#   cmake -DBUILD_DIR=.. -DSOURCE_DIR=.. -DWORK_DIR=.. [-DNVCC=..] [-DCUOBJDUMP=..] [-DCC=..]
#         -P check_custom_kernel.cmake
cmake_minimum_required(VERSION 3.25)
function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_out "${out}" PARENT_SCOPE)
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
run_step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

# ---- CMake: find_package(ringkernel) + ringkernel_add_kernels -------------------------------
set(cfg -S ${SOURCE_DIR}/examples/custom_kernel -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${prefix}
        -DCMAKE_BUILD_TYPE=RelWithDebInfo)
if(NVCC)
  list(APPEND cfg -DCMAKE_CUDA_COMPILER=${NVCC} -DRINGKERNEL_CUDA=ON)
else()
  list(APPEND cfg -DRINGKERNEL_CUDA=OFF)
endif()
run_step("configure examples/custom_kernel" ${CMAKE_COMMAND} ${cfg})
run_step("build examples/custom_kernel" ${CMAKE_COMMAND} --build ${WORK_DIR}/build -j 2)
run_step("run custom_kernel" ${WORK_DIR}/build/custom_kernel)
message(STATUS "custom_kernel (CMake): ${step_out}")
if(NOT step_out MATCHES "custom_kernel: ok")
  message(FATAL_ERROR "custom_kernel printed no check")
endif()

# ---- find_package(ringkernel) with no CUDA toolkit: the shared library needs none ------------
# (CMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit hides the toolkit even where it is installed.)
file(WRITE ${WORK_DIR}/nocuda/CMakeLists.txt "cmake_minimum_required(VERSION 3.25)
project(nocuda LANGUAGES C)
find_package(ringkernel REQUIRED)
add_executable(quickstart ${SOURCE_DIR}/examples/quickstart.c)
target_link_libraries(quickstart PRIVATE ringkernel::rk)
")
run_step("configure a consumer without the CUDA toolkit" ${CMAKE_COMMAND} -S ${WORK_DIR}/nocuda -B ${WORK_DIR}/nocuda/build
         -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=TRUE)
run_step("build the consumer without the CUDA toolkit" ${CMAKE_COMMAND} --build ${WORK_DIR}/nocuda/build)
run_step("run it" ${WORK_DIR}/nocuda/build/quickstart)
if(NOT step_out MATCHES "5.0")
  message(FATAL_ERROR "quickstart (consumer without CUDA) printed:\n${step_out}")
endif()

# ---- pkg-config: the two commands ----------------------------------------------------------
set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
find_program(PKG_CONFIG pkg-config REQUIRED)
run_step("pkg-config --cflags --libs" ${PKG_CONFIG} --cflags --libs ringkernel)
string(STRIP "${step_out}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
set(ex ${SOURCE_DIR}/examples/custom_kernel)
set(pc_defs "")
if(NVCC)
  run_step("pkg-config nvccflags" ${PKG_CONFIG} --variable=nvccflags ringkernel)
  string(STRIP "${step_out}" nv_flags)
  separate_arguments(nv_flags UNIX_COMMAND "${nv_flags}")
  run_step("nvcc (pkg-config recipe)" ${NVCC} ${nv_flags} -o ${WORK_DIR}/inventory.fatbin ${ex}/inventory_kernel.c)
  set(pc_defs "-DRK_KERNEL_FATBIN=\"${WORK_DIR}/inventory.fatbin\"")
endif()
if(NOT CC)
  set(CC cc)
endif()
run_step("cc (pkg-config recipe)" ${CC} ${pc_defs} -o ${WORK_DIR}/custom_kernel_pc ${ex}/main.c ${ex}/inventory_kernel.c
         ${pc_flags} -Wl,-rpath,${prefix}/lib)
run_step("run custom_kernel (pkg-config build)" ${WORK_DIR}/custom_kernel_pc)
message(STATUS "custom_kernel (pkg-config): ${step_out}")

# ---- device code for sm_90 -------------------------------------------------------------------
if(NVCC)
  foreach(exe ${WORK_DIR}/build/custom_kernel ${WORK_DIR}/custom_kernel_pc)
    if(CUOBJDUMP)
      run_step("cuobjdump ${exe}" ${CUOBJDUMP} --list-elf ${exe})
      if(NOT step_out MATCHES "sm_90")
        message(FATAL_ERROR "${exe} carries no sm_90 device code:\n${step_out}")
      endif()
      message(STATUS "${exe}: ${step_out}")
    else()
      # No cuobjdump: look for a CUDA ELF (e_machine 190) for sm_90 (e_flags bits 8..15) in the
      # file, as the toolkit embeds it (uncompressed) in the fatbin.
      file(READ ${exe} hex HEX)
      set(found 0)
      set(rest "${hex}")
      string(FIND "${rest}" "7f454c46" at)
      while(at GREATER -1 AND NOT found)
        string(SUBSTRING "${rest}" ${at} 100 hdr)
        string(SUBSTRING "${hdr}" 36 4 machine)
        string(SUBSTRING "${hdr}" 98 2 sm)
        if(machine STREQUAL "be00" AND sm STREQUAL "5a")
          set(found 1)
        endif()
        math(EXPR at "${at} + 8")
        string(SUBSTRING "${rest}" ${at} -1 rest)
        string(FIND "${rest}" "7f454c46" at)
      endwhile()
      if(NOT found)
        message(FATAL_ERROR "${exe} carries no sm_90 device code (no CUDA ELF for sm_90 found)")
      endif()
      message(STATUS "${exe}: carries an sm_90 CUDA ELF")
    endif()
  endforeach()
endif()
