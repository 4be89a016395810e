# Integration tests of `demix serve` (label "server"): a bash script starts
# the real server on a free loopback port (--port 0, read back from its
# startup log line) with the tiny golden models and talks HTTP with curl.
if(NOT TARGET demix_server OR NOT TARGET demix_cli)
  return()
endif()
find_program(DEMIX_BASH bash REQUIRED)
find_program(DEMIX_CURL curl)
if(NOT DEMIX_CURL)
  message(STATUS "curl not found: server tests disabled")
  return()
endif()

add_test(NAME server_api
         COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/server/api.sh)
set_tests_properties(server_api PROPERTIES
  LABELS "server"
  TIMEOUT 300
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/server_work/server_api")
