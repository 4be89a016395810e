# End-to-end test of the web page (label "web"): tests/web/e2e.mjs drives
# Debian's headless Chromium with playwright-core (tests/web/node_modules,
# installed by scripts/setup.sh with `npm ci`) against the real
# `demix serve` with the golden tiny models. Screenshots of the result and
# error states land in ${CMAKE_CURRENT_BINARY_DIR}/web_out.
if(NOT TARGET demix_server OR NOT TARGET demix_cli)
  return()
endif()
find_program(DEMIX_NODE node)
if(NOT DEMIX_NODE)
  message(WARNING "node not found: the web page test is disabled (scripts/setup.sh installs nodejs)")
  return()
endif()

add_test(NAME web_e2e
         COMMAND ${DEMIX_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/web/e2e.mjs)
set_tests_properties(web_e2e PROPERTIES
  LABELS "web"
  TIMEOUT 300
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};OUT=${CMAKE_CURRENT_BINARY_DIR}/web_out;CHROMIUM=/usr/bin/chromium")

# /openapi.json validated by @apidevtools/swagger-parser (a real OpenAPI
# 3.0.3 validator) and real answers checked against its schemas with ajv
# (tests/web/openapi.mjs; same node_modules as the page test).
add_test(NAME web_openapi
         COMMAND ${DEMIX_NODE} ${CMAKE_CURRENT_SOURCE_DIR}/web/openapi.mjs)
set_tests_properties(web_openapi PROPERTIES
  LABELS "web"
  TIMEOUT 120
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};OUT=${CMAKE_CURRENT_BINARY_DIR}/openapi_out")
