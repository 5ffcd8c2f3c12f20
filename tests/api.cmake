# api.cmake — the C API as other languages and operators use it (issue 14): options defaults as
# functions, struct sizes, message types by name, application error codes, Prometheus text and
# the /metrics endpoint. Included by tests/CMakeLists.txt. (The Python package's own tests are
# pytest, run by make test-python.)
rk_add_test(test_api SOURCES test_api.c LABELS runtime TIMEOUT 120)
