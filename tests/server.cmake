# Integration tests of `demix serve` (label "server"): bash scripts start
# the real server on a free loopback port (--port 0, read back from its
# startup log line) with the tiny golden models and talk HTTP with curl.
# tests/server/lib.sh holds what they share.
if(NOT TARGET demix_server OR NOT TARGET demix_cli)
  return()
endif()
find_program(DEMIX_BASH bash REQUIRED)
find_program(DEMIX_CURL curl)
if(NOT DEMIX_CURL)
  message(STATUS "curl not found: server tests disabled")
  return()
endif()

# api: every route's happy path and error statuses. features: alerts, rate
# limit, breaker, API key, zip, OpenAPI, metrics + promtool. persist:
# SQLite recovery after kill -9, TTL, SIGTERM drain, timeouts, CLI parity.
foreach(t api features persist hostile faults)
  add_test(NAME server_${t}
           COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/${t}.sh)
  set_tests_properties(server_${t} PROPERTIES
    LABELS "server"
    TIMEOUT 600
    ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_${t}")
endforeach()

# test_observ: UTF-8 truncation, metric label values and the alert series
# budget, zero-declared counters, text log escaping, the engine log rate
# limit, ZIP64 (tests/server/test_observ.c).
add_executable(test_observ ${CMAKE_CURRENT_SOURCE_DIR}/server/test_observ.c)
target_link_libraries(test_observ PRIVATE demix_server)
add_test(NAME test_observ COMMAND test_observ)
set_tests_properties(test_observ PROPERTIES LABELS "unit" TIMEOUT 120)
