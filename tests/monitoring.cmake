# Tests of the monitoring stack (label "monitoring"): deploy/ configuration
# checked with Debian's promtool and amtool, the promtool rule unit tests,
# the Grafana dashboard, and the native stack run live on 127.0.0.1
# (tests/monitoring/live.sh), and the compose file under Debian's
# docker-compose (compose.sh). Needs the Debian packages prometheus,
# prometheus-alertmanager, prometheus-node-exporter and docker-compose
# (scripts/setup.sh).
find_program(DEMIX_PROMTOOL promtool)
find_program(DEMIX_AMTOOL amtool)
find_program(DEMIX_PYTHON3 python3)
find_program(DEMIX_BASH_MON bash)
if(NOT DEMIX_PROMTOOL OR NOT DEMIX_AMTOOL OR NOT DEMIX_PYTHON3)
  message(STATUS "promtool, amtool or python3 not found: monitoring tests disabled "
                 "(apt-get install prometheus prometheus-alertmanager python3)")
  return()
endif()
set(MON_DEPLOY ${PROJECT_SOURCE_DIR}/deploy)
set(MON_TESTS ${CMAKE_CURRENT_SOURCE_DIR}/monitoring)
file(GLOB MON_RULE_TESTS CONFIGURE_DEPENDS ${MON_DEPLOY}/prometheus/tests/*.test.yml)

add_test(NAME monitoring_prometheus_config
         COMMAND ${DEMIX_PROMTOOL} check config ${MON_DEPLOY}/prometheus/prometheus.yml)
# the cluster's configuration (deploy/docker-compose.cluster.yml): dns_sd +
# file_sd; promtool also parses the targets/*.yml files it names.
add_test(NAME monitoring_prometheus_cluster_config
         COMMAND ${DEMIX_PROMTOOL} check config ${MON_DEPLOY}/prometheus/prometheus.cluster.yml)
add_test(NAME monitoring_rules_check
         COMMAND ${DEMIX_PROMTOOL} check rules ${MON_DEPLOY}/prometheus/alert_rules.yml)
add_test(NAME monitoring_rules_unit
         COMMAND ${DEMIX_PROMTOOL} test rules ${MON_RULE_TESTS}
         WORKING_DIRECTORY ${MON_DEPLOY}/prometheus)
add_test(NAME monitoring_rules_coverage
         COMMAND ${DEMIX_PYTHON3} ${MON_TESTS}/promql_check.py coverage
                 ${MON_DEPLOY}/prometheus/alert_rules.yml ${MON_RULE_TESTS})
add_test(NAME monitoring_alertmanager_config
         COMMAND ${DEMIX_BASH_MON} ${MON_TESTS}/alertmanager.sh)
add_test(NAME monitoring_dashboard
         COMMAND ${DEMIX_PYTHON3} ${MON_TESTS}/promql_check.py dashboard
                 ${MON_DEPLOY}/grafana/dashboards/overview.json)
add_test(NAME monitoring_compose COMMAND ${DEMIX_BASH_MON} ${MON_TESTS}/compose.sh)
set_tests_properties(monitoring_prometheus_config monitoring_prometheus_cluster_config monitoring_rules_check monitoring_rules_unit
                     monitoring_rules_coverage monitoring_alertmanager_config monitoring_dashboard
                     monitoring_compose
                     PROPERTIES LABELS "monitoring" TIMEOUT 120
                     ENVIRONMENT "SRC=${PROJECT_SOURCE_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/monitoring_work/alertmanager")

find_program(DEMIX_PROMETHEUS prometheus)
find_program(DEMIX_ALERTMANAGER NAMES prometheus-alertmanager alertmanager)
find_program(DEMIX_NODE_EXPORTER NAMES prometheus-node-exporter node_exporter)
find_program(DEMIX_CURL_MON curl)
if(NOT TARGET demix_cli OR NOT TARGET demix_server OR NOT DEMIX_PROMETHEUS
   OR NOT DEMIX_ALERTMANAGER OR NOT DEMIX_NODE_EXPORTER OR NOT DEMIX_CURL_MON)
  message(STATUS "monitoring_live disabled: needs demix serve, curl, prometheus, "
                 "prometheus-alertmanager and prometheus-node-exporter")
  return()
endif()
add_test(NAME monitoring_live COMMAND ${DEMIX_BASH_MON} ${MON_TESTS}/live.sh)
set_tests_properties(monitoring_live PROPERTIES
  LABELS "monitoring" TIMEOUT 300 RUN_SERIAL TRUE
  ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;GOLDEN=${DEMIX_GOLDEN_DIR};SRC=${PROJECT_SOURCE_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/monitoring_work/live")
