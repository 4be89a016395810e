# fuzz_ckpt.cmake - libFuzzer target for the checkpoint loader, pickle VM and
# bag YAML parser (tests/fuzz/fuzz_ckpt.c). Only with clang. The parsers are
# compiled into the target directly so they carry coverage instrumentation.
# test_ckpt writes the seed corpus (a synthetic checkpoint and its pickle) at
# test time; fuzz_ckpt_smoke then runs the fuzzer briefly over it.
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  set(_dmx_fz_src ${PROJECT_SOURCE_DIR}/src/engine)
  add_executable(fuzz_ckpt ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_ckpt.c
                           ${_dmx_fz_src}/zip.c ${_dmx_fz_src}/pickle.c ${_dmx_fz_src}/ckpt.c
                           ${_dmx_fz_src}/bagyaml.c ${_dmx_fz_src}/error.c)
  target_include_directories(fuzz_ckpt PRIVATE ${PROJECT_SOURCE_DIR}/include ${_dmx_fz_src})
  target_compile_options(fuzz_ckpt PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_options(fuzz_ckpt PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_ckpt PRIVATE PkgConfig::ZLIB m)

  set(_dmx_fz_corpus ${PROJECT_BINARY_DIR}/fuzz_corpus)
  file(MAKE_DIRECTORY ${_dmx_fz_corpus})
  if(EXISTS ${DEMIX_GOLDEN_DIR}/models/tinybag.yaml)
    file(COPY ${DEMIX_GOLDEN_DIR}/models/tinybag.yaml DESTINATION ${_dmx_fz_corpus})
  endif()
  if(TEST test_ckpt)
    set_property(TEST test_ckpt APPEND PROPERTY ENVIRONMENT "DEMIX_FUZZ_SEED_DIR=${_dmx_fz_corpus}")
    set_property(TEST test_ckpt APPEND PROPERTY FIXTURES_SETUP dmx_fuzz_seeds)
  endif()
  add_test(NAME fuzz_ckpt_smoke
           COMMAND fuzz_ckpt -runs=20000 -max_len=8192 -max_total_time=60 ${_dmx_fz_corpus})
  set_tests_properties(fuzz_ckpt_smoke PROPERTIES LABELS "unit" TIMEOUT 300
                       FIXTURES_REQUIRED dmx_fuzz_seeds)
endif()
