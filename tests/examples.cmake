# examples.cmake — the examples run as tests: each exits 0 only when everything it checks holds.
# Examples may be disabled (RK_BUILD_EXAMPLES=OFF, e.g. sanitizer builds), hence if(TARGET). The
# top-level CMakeLists adds examples/ after tests/, so the check is deferred to the end of the
# top-level directory, when every example target exists; the tests are registered there.
function(rk_add_example_tests)
  if(TARGET quickstart)
    add_test(NAME example_quickstart COMMAND quickstart)
    set_tests_properties(example_quickstart PROPERTIES TIMEOUT 60)
  endif()
  if(TARGET actors)
    add_test(NAME example_actors COMMAND actors)
    set_tests_properties(example_actors PROPERTIES TIMEOUT 60)
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${PROJECT_SOURCE_DIR} CALL rk_add_example_tests)
