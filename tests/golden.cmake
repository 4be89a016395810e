# Parity tests against upstream's outputs (label "golden"), one per file in
# ../shared/golden/outputs, plus the layer-by-layer test.
add_executable(golden ${CMAKE_CURRENT_SOURCE_DIR}/golden_main.c)
target_link_libraries(golden PRIVATE dmx_testutil)
foreach(case tiny4s_forward_7s8 tiny4s_forward_3s tiny6s_forward_3s htdemucs_6s_random_forward_3s
             tiny4s_apply_12s tiny4s_apply_3s tinybag_apply_3s tiny4s_separate_12s tiny6s_separate_3s)
  add_test(NAME golden_${case} COMMAND golden ${case})
  set_tests_properties(golden_${case} PROPERTIES LABELS "golden" TIMEOUT 1800
    ENVIRONMENT "DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR}")
endforeach()
