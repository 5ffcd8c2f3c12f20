# cuda_host.cmake — the CUDA backend's host-side rules that hold without a GPU (unconfirmed joins,
# dead lanes, faults at check-in, the process-wide device use, the probe), against the device
# lane loop compiled as host C++ (as test_devemu). Included by tests/CMakeLists.txt.
rk_add_test(test_cuda_host SOURCES test_cuda_host.c LABELS runtime STATIC TIMEOUT 120)
target_link_libraries(test_cuda_host PRIVATE rk_devemu)
