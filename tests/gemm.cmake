# test_gemm again with DEMIX_GEMM=openblas: the setting keeps OpenBLAS
# (test_gemm itself, from the DEMIX_TESTS loop, forces the own kernels).
add_test(NAME test_gemm_openblas COMMAND test_gemm)
set_tests_properties(test_gemm_openblas PROPERTIES ENVIRONMENT "DEMIX_GEMM=openblas" LABELS "unit"
                                                   TIMEOUT 300)
# test_ffn likewise: without the own kernels the block is the two products.
add_test(NAME test_ffn_openblas COMMAND test_ffn)
set_tests_properties(test_ffn_openblas PROPERTIES ENVIRONMENT "DEMIX_GEMM=openblas" LABELS "unit"
                                                  TIMEOUT 300)
