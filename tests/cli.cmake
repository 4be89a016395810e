# Integration tests of the `demix` command-line tool (label "cli"): bash
# scripts in tests/cli/ run the real binary on the tiny golden models, with a
# small numeric checker and a local HTTP server for `demix models fetch`.
if(NOT TARGET demix_cli)
  return()
endif()

add_executable(demix_cli_check ${CMAKE_CURRENT_SOURCE_DIR}/cli/check.c)
target_link_libraries(demix_cli_check PRIVATE dmx_testutil demix_audio m)
add_executable(demix_test_httpd ${CMAKE_CURRENT_SOURCE_DIR}/cli/httpd.c)

find_program(DEMIX_BASH bash REQUIRED)

function(demix_cli_test name script)
  add_test(NAME ${name}
           COMMAND ${DEMIX_BASH} ${CMAKE_CURRENT_SOURCE_DIR}/cli/${script} ${ARGN})
  set_tests_properties(${name} PROPERTIES
    LABELS "cli"
    TIMEOUT 900
    ENVIRONMENT "DEMIX=$<TARGET_FILE:demix_cli>;CHECK=$<TARGET_FILE:demix_cli_check>;HTTPD=$<TARGET_FILE:demix_test_httpd>;GOLDEN=${DEMIX_GOLDEN_DIR};WORK=${CMAKE_CURRENT_BINARY_DIR}/cli_work/${name};DEMIX_GOLDEN_DIR=${DEMIX_GOLDEN_DIR}")
endfunction()

demix_cli_test(cli_golden_tiny4s golden.sh tiny4s mix_12s tiny4s_separate_12s
               drums bass other vocals)
demix_cli_test(cli_golden_tiny6s golden.sh tiny6s mix_3s tiny6s_separate_3s
               drums bass other vocals guitar piano)
demix_cli_test(cli_golden_bs_roformer roformer.sh config bs_roformer_tiny
               bs_roformer_tiny_demix_12s 1 vocals)
demix_cli_test(cli_golden_mel_band_roformer roformer.sh name mel_band_roformer_tiny
               mel_band_roformer_tiny_demix_12s 1 vocals)
demix_cli_test(cli_golden_bs_roformer_4stem roformer.sh name bs_roformer_4stem_tiny
               bs_roformer_4stem_tiny_demix_12s 8 drums bass other vocals)
demix_cli_test(cli_zoo_demucs zoo_demucs.sh)
demix_cli_test(cli_usage usage.sh)
demix_cli_test(cli_errors errors.sh)
demix_cli_test(cli_two_stems two_stems.sh)
demix_cli_test(cli_formats formats.sh)
demix_cli_test(cli_tracks tracks.sh)
demix_cli_test(cli_fetch fetch.sh)
demix_cli_test(cli_fetch_roformer fetch_roformer.sh)
demix_cli_test(cli_signals signals.sh)
demix_cli_test(cli_models models.sh)
demix_cli_test(cli_golden_hdemucs_mmi_tiny golden_zoo.sh mmi_tiny drums bass other vocals)
demix_cli_test(cli_golden_mdx_tiny golden_zoo.sh mdx_tiny drums bass other vocals)
