# Integration tests of `demix serve` (label "server"): bash scripts start
# the real server on a free loopback port (--port 0, read back from its
# startup log line) with the tiny golden models and talk HTTP with curl.
# tests/server/lib.sh holds what they share.
if(NOT TARGET demix_server OR NOT TARGET demix_cli)
  return()
endif()
# Unit test of the pure parts of POST /separate (form parser, path
# scrubbing) and of the error table; no server runs.
add_executable(test_server_form ${CMAKE_CURRENT_SOURCE_DIR}/server/test_form.c)
target_link_libraries(test_server_form PRIVATE dmx_testutil demix_server)
add_test(NAME test_server_form COMMAND test_server_form)
set_tests_properties(test_server_form PROPERTIES LABELS "unit")

# resilience.c on its own (label "unit"): token bucket, breaker, backoff,
# with the test's own clock, log and metrics in place of the server's.
pkg_check_modules(TEST_CJSON REQUIRED IMPORTED_TARGET libcjson)
add_executable(test_resilience ${CMAKE_CURRENT_SOURCE_DIR}/server/test_resilience.c
                               ${PROJECT_SOURCE_DIR}/src/server/resilience.c)
target_include_directories(test_resilience PRIVATE ${PROJECT_SOURCE_DIR}/src/server)
target_link_libraries(test_resilience PRIVATE demix PkgConfig::TEST_CJSON Threads::Threads m)
add_test(NAME test_resilience COMMAND test_resilience)
set_tests_properties(test_resilience PROPERTIES LABELS "unit" TIMEOUT 120)

find_program(DEMIX_BASH bash REQUIRED)
find_program(DEMIX_CURL curl)
# Sanitizer builds run these scripts 2-20x slower (TSan: server_pg and
# server_pg_queue ~310-330 s on a fast 2-core machine, CI machines differ
# 3x): their ctest timeouts and the scripts' own bounds (TIME_SCALE) grow.
set(SRV_SCALE 1)
if(DEMIX_SANITIZE)
  set(SRV_SCALE 3)
endif()
math(EXPR SRV_TIMEOUT "600 * ${SRV_SCALE}")
math(EXPR SRV_TIMEOUT_PG "900 * ${SRV_SCALE}")
if(NOT DEMIX_CURL)
  message(STATUS "curl not found: server tests disabled")
  return()
endif()

# api: every route's happy path and error statuses. features: alerts, rate
# limit, breaker, API key, zip, OpenAPI, metrics + promtool. persist:
# SQLite recovery after kill -9, TTL, SIGTERM drain, timeouts, CLI parity.
# durability: no 202 without a stored row, orphaned folders swept.
# cache: no --repo, models from the cache under upstream's file names.
# limits: no heavy work on the HTTP thread, no paths in errors, low disk,
# queue_position, model loads that block nothing else.
# zoo: HDemucs and mdx bags from a repo of the zoo fixtures, stems = the CLI's.
foreach(t api features persist hostile faults durability limits cache http_edges zoo)
  add_test(NAME server_${t}
           COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/${t}.sh)
  set_tests_properties(server_${t} PROPERTIES
    LABELS "server"
    TIMEOUT ${SRV_TIMEOUT}
    ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};TIME_SCALE=${SRV_SCALE};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_${t}")
endforeach()

# pg: the PostgreSQL job store (--store postgresql://) against a throwaway
# cluster the script starts (initdb as nobody, Unix socket); skipped (77)
# without the postgresql package.
add_test(NAME server_pg COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/pg.sh)
set_tests_properties(server_pg PROPERTIES
  LABELS "server" TIMEOUT ${SRV_TIMEOUT_PG} SKIP_RETURN_CODE 77
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};TIME_SCALE=${SRV_SCALE};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_pg")

# pg_queue: the clustered mode's shared queue (serve --no-workers + two
# `demix worker`s on one PostgreSQL): SKIP LOCKED, NOTIFY, leases, DELETE,
# kill -9, bounded attempts, stale final writes; skipped (77) likewise.
add_test(NAME server_pg_queue COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/pg_queue.sh)
set_tests_properties(server_pg_queue PROPERTIES
  LABELS "server" TIMEOUT ${SRV_TIMEOUT_PG} SKIP_RETURN_CODE 77
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};TIME_SCALE=${SRV_SCALE};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_pg_queue")

# cluster: 1 PostgreSQL, 2 API nodes (serve --no-workers), 3 `demix worker`s
# on one shared data dir; 30 jobs round-robin, a worker killed -9 mid-job,
# an API node and PostgreSQL restarted; each job done exactly once with the
# CLI's stems, no orphaned files. Skipped (77) without PostgreSQL.
# Five demix processes and PostgreSQL: run alone (RUN_SERIAL), and with 12
# jobs under a sanitizer.
set(CLUSTER_JOBS 30)
math(EXPR CLUSTER_LEASE "4 * ${SRV_SCALE}") # seconds: a sanitized heartbeat can stall for more than 4
if(DEMIX_SANITIZE)
  set(CLUSTER_JOBS 12)
endif()
add_test(NAME server_cluster COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/cluster.sh)
set_tests_properties(server_cluster PROPERTIES
  LABELS "server" TIMEOUT ${SRV_TIMEOUT_PG} SKIP_RETURN_CODE 77 RUN_SERIAL TRUE
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};CLUSTER_JOBS=${CLUSTER_JOBS};CLUSTER_LEASE=${CLUSTER_LEASE};TIME_SCALE=${SRV_SCALE};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_cluster")

# roformer: RoFormer models (MSST config + checkpoint) in --repo, listed and
# separated; the stem is checked with the CLI tests' checker.
if(TARGET demix_cli_check)
  add_test(NAME server_roformer
           COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/roformer.sh)
  set_tests_properties(server_roformer PROPERTIES
    LABELS "server"
    TIMEOUT ${SRV_TIMEOUT}
    ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;CHECK=$<TARGET_FILE:demix_cli_check>;GOLDEN=${DEMIX_GOLDEN_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_roformer")
endif()

# test_observ: UTF-8 truncation, metric label values and the alert series
# budget, zero-declared counters, text log escaping, the engine log rate
# limit, ZIP64 (tests/server/test_observ.c).
add_executable(test_observ ${CMAKE_CURRENT_SOURCE_DIR}/server/test_observ.c)
target_link_libraries(test_observ PRIVATE demix_server)
add_test(NAME test_observ COMMAND test_observ)
set_tests_properties(test_observ PROPERTIES LABELS "unit" TIMEOUT 120)
