# HDemucs v3 parity with upstream on ../shared/golden/zoo (label "golden"):
# forward outputs and layer-by-layer activations.
add_executable(hdemucs_golden ${CMAKE_CURRENT_SOURCE_DIR}/hdemucs_golden.c)
target_link_libraries(hdemucs_golden PRIVATE dmx_testutil)
foreach(spec "forward;hdemucs_mmi_tiny;mix_3s" "forward;mdx_hdemucs_mask_tiny;mix_3s"
             "forward;mdx_hdemucs_cac_tiny;mix_3s" "forward;mdx_extra_q_hdemucs_tiny;mix_3s;44100"
             "layers;hdemucs_mmi_tiny;mix_12s" "layers;mdx_hdemucs_mask_tiny;mix_3s"
             "layers;mdx_hdemucs_cac_tiny;mix_3s" "separate;mmi_tiny" "separate;mdx_hdemucs_mask_tiny"
             "separate;mdx_tiny")
  list(GET spec 0 mode)
  list(GET spec 1 model)
  add_test(NAME golden_hdemucs_${mode}_${model} COMMAND hdemucs_golden ${spec})
  set_tests_properties(golden_hdemucs_${mode}_${model} PROPERTIES LABELS "golden" TIMEOUT 1800
    ENVIRONMENT "DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR}")
endforeach()
