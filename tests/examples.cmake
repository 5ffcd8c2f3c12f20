# examples.cmake — the examples run as tests: each exits 0 only when everything it checks holds.
# Examples may be disabled (RK_BUILD_EXAMPLES=OFF, e.g. sanitizer builds), hence if(TARGET). The
# top-level CMakeLists adds examples/ after tests/, so the check is deferred to the end of the
# top-level directory, when every example target exists; the tests are registered there.
function(rk_add_example_tests)
  if(TARGET quickstart)
    add_test(NAME example_quickstart COMMAND quickstart)
    set_tests_properties(example_quickstart PROPERTIES TIMEOUT 60)
  endif()
  if(TARGET pipeline)
    add_test(NAME example_pipeline COMMAND pipeline)
    set_tests_properties(example_pipeline PROPERTIES TIMEOUT 120)
  endif()
  if(TARGET actors)
    add_test(NAME example_actors COMMAND actors)
    set_tests_properties(example_actors PROPERTIES TIMEOUT 60)
  endif()
  if(TARGET distributed_pipeline) # under mpirun, 2 ranks (tests/mpi.cmake's environment)
    get_property(_env GLOBAL PROPERTY RK_MPI_TEST_ENV)
    add_test(NAME example_distributed_pipeline
             COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} 2 --oversubscribe ${MPIEXEC_PREFLAGS}
                     $<TARGET_FILE:distributed_pipeline> ${MPIEXEC_POSTFLAGS})
    set_tests_properties(example_distributed_pipeline PROPERTIES TIMEOUT 120 LABELS "mpi" ENVIRONMENT "${_env}"
                         PROCESSORS 2)
  endif()
endfunction()

# examples/custom_kernel against an installed copy (tests/tools/check_custom_kernel.cmake): the
# package, its CMake function and its pkg-config recipe as a user meets them. nosan: a sanitized
# librk cannot be linked by an unsanitized program.
set(_rk_cuobjdump "")
if(RK_HAVE_CUDA)
  find_program(RK_CUOBJDUMP cuobjdump HINTS ${CUDAToolkit_BIN_DIR}
               PATHS ${PROJECT_SOURCE_DIR}/.tools/cuda/nvidia/cu13/bin NO_CACHE)
  if(RK_CUOBJDUMP)
    set(_rk_cuobjdump ${RK_CUOBJDUMP})
  endif()
endif()
add_test(NAME example_custom_kernel
         COMMAND ${CMAKE_COMMAND} -DBUILD_DIR=${PROJECT_BINARY_DIR} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
                 -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/custom_kernel_install
                 "-DNVCC=$<$<BOOL:${RK_HAVE_CUDA}>:${CMAKE_CUDA_COMPILER}>" "-DCUOBJDUMP=${_rk_cuobjdump}"
                 -DCC=${CMAKE_C_COMPILER}
                 -P ${CMAKE_CURRENT_SOURCE_DIR}/tools/check_custom_kernel.cmake)
set_tests_properties(example_custom_kernel PROPERTIES TIMEOUT 600 LABELS "nosan")
cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL rk_add_example_tests)
