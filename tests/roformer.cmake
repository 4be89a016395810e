# RoFormer parity tests against MSST's outputs (label "golden"), one per file
# in ../shared/golden/roformer/outputs (see its README).
add_executable(golden_roformer ${CMAKE_CURRENT_SOURCE_DIR}/golden_roformer.c)
target_link_libraries(golden_roformer PRIVATE dmx_testutil)
foreach(case bs_roformer_tiny_forward_8s mel_band_roformer_tiny_forward_8s bs_roformer_4stem_tiny_forward_11s
             mel_band_roformer_4stem_tiny_forward_8s bs_roformer_linear_tiny_forward_3s
             bs_roformer_tiny_demix_12s bs_roformer_tiny_demix_3s mel_band_roformer_tiny_demix_12s
             bs_roformer_4stem_tiny_demix_12s)
  add_test(NAME golden_roformer_${case} COMMAND golden_roformer ${case})
  set_tests_properties(golden_roformer_${case} PROPERTIES LABELS "golden" TIMEOUT 1800
    ENVIRONMENT "DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR}")
endforeach()
