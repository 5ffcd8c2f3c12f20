# soak.cmake — the soak test: ctest label soak, run by `make soak` only (make test leaves the
# label out). 10^8 messages by default (RK_SOAK_MESSAGES to change it); it prints its figures.
# RUN_SERIAL: it wants the machine's cores to itself. The timeout is a hang guard sized for the
# 2-core reference VM.
rk_add_test(test_soak SOURCES test_soak.c LABELS soak TIMEOUT 5400)
set_tests_properties(test_soak PROPERTIES RUN_SERIAL ON)
