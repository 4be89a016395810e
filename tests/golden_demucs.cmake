# Parity of the time-domain Demucs with upstream on ../shared/golden/zoo
# (label "golden"): forwards, layers, DiffQ dequantisation.
add_executable(golden_demucs ${CMAKE_CURRENT_SOURCE_DIR}/golden_demucs_main.c)
target_link_libraries(golden_demucs PRIVATE dmx_testutil)
foreach(case mdx_demucs_a_tiny_forward_3s repro_demucs_tiny_forward_3s mdx_q_demucs_tiny_forward_1s layers dequant dequant_extra
             mdx_demucs_a_tiny_separate_50s)
  add_test(NAME golden_demucs_${case} COMMAND golden_demucs ${case})
  set_tests_properties(golden_demucs_${case} PROPERTIES LABELS "golden" TIMEOUT 900
    ENVIRONMENT "DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR}")
endforeach()
