# check_nvcc.cmake — ctest driver (cmake -P): compile the public headers with nvcc and check the
# device code that comes out. Arguments (-D): NVCC, INCLUDE_DIR, KERNEL (headers_kernel.cu),
# UMBRELLA (headers_umbrella.cu), OUT_DIR.
#  1. KERNEL -> PTX for compute_75 with -Werror all-warnings; the PTX must hold the system-scope
#     acquire load, release store and fence that the ordering primitives promise (a device branch
#     that fell back to a host builtin is deleted by nvcc, and those instructions go with it);
#  2. KERNEL -> object for sm_90: ptxas accepts the inline PTX and the host pass compiles too;
#  3. UMBRELLA (every public header) -> PTX.
foreach(v NVCC INCLUDE_DIR KERNEL UMBRELLA OUT_DIR)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "check_nvcc.cmake: -D${v}= is required")
  endif()
endforeach()
file(MAKE_DIRECTORY ${OUT_DIR})

function(run_nvcc what)
  execute_process(COMMAND ${NVCC} -std=c++17 -Werror all-warnings -I${INCLUDE_DIR} ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nvcc (${what}) failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "nvcc ${what}: ok")
endfunction()

run_nvcc("kernel -> PTX compute_75" -arch=compute_75 -ptx ${KERNEL} -o ${OUT_DIR}/headers_kernel.ptx)
file(READ ${OUT_DIR}/headers_kernel.ptx ptx)
foreach(needle ".entry rk_test_lane" ".entry rk_test_k2k" ".entry rk_test_ordering"
               "ld.acquire.sys.u64" "ld.acquire.sys.u32" "st.release.sys.u64" "st.release.sys.u32"
               "ld.relaxed.sys" "st.relaxed.sys" "fence.acq_rel.sys" "fence.sc.sys"
               "ld.acquire.gpu.u64" "st.release.gpu.u64" "atom.acq_rel.gpu.cas.b64" "fence.acq_rel.gpu")
  string(FIND "${ptx}" "${needle}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "PTX lacks '${needle}': an ordering primitive was lost in device code")
  endif()
endforeach()
message(STATUS "PTX holds every ordering instruction")

run_nvcc("kernel -> sm_90 object" -arch=sm_90 -c ${KERNEL} -o ${OUT_DIR}/headers_kernel.o)
run_nvcc("umbrella -> PTX compute_75" -arch=compute_75 -ptx ${UMBRELLA} -o ${OUT_DIR}/headers_umbrella.ptx)
