# fuzz.cmake - fuzz targets for every parser of outside input (tests/fuzz/):
#   ckpt     zip reader + checkpoint loader + pickle VM (src/engine)
#   bagyaml  bag-of-models YAML (src/engine/bagyaml.c)
#   rfconfig MSST model configs: YAML tree + RoFormer config reader
#   audio    FFmpeg decode wrapper (src/audio/decode.c)
#   alerts   Alertmanager webhook JSON (src/server/alerts.c; links demix_observ only)
#   http     whole HTTP connections through the real daemon (src/server)
# Each tests/fuzz/fuzz_<t>.c exports LLVMFuzzerTestOneInput and becomes
#   replay_<t>  with any compiler: tests/fuzz/replay_main.c runs it on files;
#               ctest fuzz_replay_<t> (label unit) replays the committed seeds
#               tests/fuzz/corpus/<t>/ and reproducers tests/fuzz/regress/<t>/
#               (sanitizer-checked in the ASan/UBSan build);
#   fuzz_<t>    with clang only: a libFuzzer binary whose code under test is
#               compiled again with coverage + ASan + UBSan (the normal
#               libraries are not instrumented); fuzz_<t>_smoke runs it briefly.
# scripts/fuzz.sh builds the fuzz_<t> binaries and runs them for longer.
set(_dmx_fz ${CMAKE_CURRENT_SOURCE_DIR}/fuzz)
set(_dmx_fz_eng ${PROJECT_SOURCE_DIR}/src/engine)
set(_dmx_fz_clang OFF)
if(CMAKE_C_COMPILER_ID MATCHES "Clang")
  set(_dmx_fz_clang ON)
  set(_dmx_fz_cov -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                  -fno-omit-frame-pointer)
  set(_dmx_fz_link -fsanitize=fuzzer,address,undefined)
  set(_dmx_fz_smoke_dir ${PROJECT_BINARY_DIR}/fuzz_smoke)
endif()

# replay_<t> + its ctest; ARGN: libraries it links.
function(dmx_fuzz_replay t)
  add_executable(replay_${t} ${_dmx_fz}/fuzz_${t}.c ${_dmx_fz}/replay_main.c)
  target_link_libraries(replay_${t} PRIVATE ${ARGN})
  target_include_directories(replay_${t} PRIVATE ${_dmx_fz_eng})
  add_test(NAME fuzz_replay_${t}
           COMMAND replay_${t} ${_dmx_fz}/corpus/${t} ${_dmx_fz}/regress/${t} ${_dmx_fz_seeds_${t}})
  set_tests_properties(fuzz_replay_${t} PROPERTIES LABELS "unit" TIMEOUT 120)
  dmx_fuzz_seeded(fuzz_replay_${t} ${t})
endfunction()

# Checkpoint seeds are binary archives: test_ckpt writes them at test time
# into the build tree (DEMIX_FUZZ_SEED_DIR) rather than the repository
# holding them; the ckpt replay and smoke tests read them from there.
set(_dmx_fz_seeds_ckpt ${PROJECT_BINARY_DIR}/fuzz_seeds/ckpt)
file(MAKE_DIRECTORY ${_dmx_fz_seeds_ckpt})
if(TEST test_ckpt)
  set_property(TEST test_ckpt APPEND PROPERTY ENVIRONMENT "DEMIX_FUZZ_SEED_DIR=${_dmx_fz_seeds_ckpt}")
  set_property(TEST test_ckpt APPEND PROPERTY FIXTURES_SETUP dmx_fuzz_seeds)
endif()
# Test NAME of target T needs the generated seeds when T has some.
function(dmx_fuzz_seeded name t)
  if(_dmx_fz_seeds_${t} AND TEST test_ckpt)
    set_property(TEST ${name} APPEND PROPERTY FIXTURES_REQUIRED dmx_fuzz_seeds)
  endif()
endfunction()

# fuzz_<t> (clang): the harness plus instrumented code; ARGN: libraries.
function(dmx_fuzz_binary t)
  if(NOT _dmx_fz_clang)
    return()
  endif()
  add_executable(fuzz_${t} ${_dmx_fz}/fuzz_${t}.c)
  target_compile_options(fuzz_${t} PRIVATE ${_dmx_fz_cov})
  target_link_options(fuzz_${t} PRIVATE ${_dmx_fz_link})
  target_include_directories(fuzz_${t} PRIVATE ${PROJECT_SOURCE_DIR}/include ${_dmx_fz_eng})
  target_link_libraries(fuzz_${t} PRIVATE ${ARGN})
  # A short run over the seeds; new inputs go to the build tree, never to
  # the committed corpus.
  file(MAKE_DIRECTORY ${_dmx_fz_smoke_dir}/${t})
  set(_dict)
  if(EXISTS ${_dmx_fz}/${t}.dict)
    set(_dict -dict=${_dmx_fz}/${t}.dict)
  endif()
  add_test(NAME fuzz_${t}_smoke
           COMMAND fuzz_${t} -runs=3000 -max_total_time=20 -timeout=10 ${_dict}
                   ${_dmx_fz_smoke_dir}/${t} ${_dmx_fz}/corpus/${t} ${_dmx_fz_seeds_${t}})
  set_tests_properties(fuzz_${t}_smoke PROPERTIES LABELS "unit" TIMEOUT 120)
  dmx_fuzz_seeded(fuzz_${t}_smoke ${t})
endfunction()

# An instrumented copy (static library) of some of our sources.
function(dmx_fuzz_lib name)
  add_library(${name} STATIC ${ARGN})
  target_compile_options(${name} PRIVATE ${_dmx_fz_cov})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include PRIVATE ${_dmx_fz_eng})
endfunction()

# ---- engine: checkpoints, pickles, bag YAML ------------------------------------
dmx_fuzz_replay(ckpt demix)
dmx_fuzz_replay(bagyaml demix)
dmx_fuzz_replay(rfconfig demix)
if(_dmx_fz_clang)
  dmx_fuzz_lib(dmx_fz_ckpt ${_dmx_fz_eng}/zip.c ${_dmx_fz_eng}/pickle.c ${_dmx_fz_eng}/ckpt.c
               ${_dmx_fz_eng}/error.c)
  target_link_libraries(dmx_fz_ckpt PUBLIC demix PkgConfig::ZLIB m)
  dmx_fuzz_binary(ckpt dmx_fz_ckpt)
  dmx_fuzz_lib(dmx_fz_bagyaml ${_dmx_fz_eng}/yamltree.c ${_dmx_fz_eng}/bagyaml.c ${_dmx_fz_eng}/error.c)
  target_link_libraries(dmx_fz_bagyaml PUBLIC demix PkgConfig::YAML m)
  dmx_fuzz_binary(bagyaml dmx_fz_bagyaml)
  dmx_fuzz_lib(dmx_fz_rfconfig ${_dmx_fz_eng}/yamltree.c ${_dmx_fz_eng}/roformer_config.c
               ${_dmx_fz_eng}/roformer_bands.c ${_dmx_fz_eng}/error.c)
  target_link_libraries(dmx_fz_rfconfig PUBLIC demix PkgConfig::YAML m)
  dmx_fuzz_binary(rfconfig dmx_fz_rfconfig)
endif()

# ---- audio decoding -----------------------------------------------------------
if(TARGET demix_audio)
  dmx_fuzz_replay(audio demix_audio)
  if(_dmx_fz_clang)
    pkg_check_modules(DMX_FZ_LIBAV REQUIRED IMPORTED_TARGET
                      libavformat libavcodec libswresample libavutil)
    file(GLOB _dmx_fz_audio_src ${PROJECT_SOURCE_DIR}/src/audio/*.c)
    dmx_fuzz_lib(dmx_fz_audio ${_dmx_fz_audio_src})
    target_include_directories(dmx_fz_audio PRIVATE ${PROJECT_SOURCE_DIR}/src/audio)
    target_link_libraries(dmx_fz_audio PUBLIC demix PkgConfig::DMX_FZ_LIBAV Threads::Threads m)
    dmx_fuzz_binary(audio dmx_fz_audio)
  endif()
endif()

# ---- the HTTP service -----------------------------------------------------------
if(TARGET demix_server)
  # The webhook parser is in the leaf library demix_observ: no HTTP daemon,
  # no FFmpeg (fuzz_alerts_links checks that the replay binary needs none).
  dmx_fuzz_replay(alerts demix_observ)
  add_test(NAME fuzz_alerts_links
           COMMAND sh -c "! ldd \"$1\" | grep -E 'lib(avcodec|avformat|avutil|swresample|microhttpd|sqlite3)'"
                   sh $<TARGET_FILE:replay_alerts>)
  set_tests_properties(fuzz_alerts_links PROPERTIES LABELS "unit" TIMEOUT 30)
  dmx_fuzz_replay(http demix_server)
  if(_dmx_fz_clang)
    get_target_property(_dmx_fz_srv_dir demix_server SOURCE_DIR)
    dmx_fuzz_lib(dmx_fz_observ ${_dmx_fz_srv_dir}/log.c ${_dmx_fz_srv_dir}/metrics.c
                 ${_dmx_fz_srv_dir}/alerts.c)
    target_compile_definitions(dmx_fz_observ PRIVATE DEMIX_SERVER_VERSION="${PROJECT_VERSION}")
    target_include_directories(dmx_fz_observ PUBLIC ${_dmx_fz_srv_dir}
                               PRIVATE ${PROJECT_BINARY_DIR}/src/server/generated)
    pkg_check_modules(DMX_FZ_CJSON REQUIRED IMPORTED_TARGET libcjson)
    target_link_libraries(dmx_fz_observ PUBLIC PkgConfig::DMX_FZ_CJSON Threads::Threads m)
    dmx_fuzz_binary(alerts dmx_fz_observ)
    # The same sources as demix_server (and demix_observ's), web_assets.c
    # (generated there) too.
    get_target_property(_dmx_fz_srv_src demix_server SOURCES)
    get_target_property(_dmx_fz_obs_src demix_observ SOURCES)
    list(APPEND _dmx_fz_srv_src ${_dmx_fz_obs_src})
    set(_dmx_fz_srv)
    foreach(s ${_dmx_fz_srv_src})
      if(NOT IS_ABSOLUTE ${s})
        set(s ${_dmx_fz_srv_dir}/${s})
      endif()
      if(s MATCHES "web_assets\\.c$")
        set_source_files_properties(${s} PROPERTIES GENERATED TRUE)
      endif()
      list(APPEND _dmx_fz_srv ${s})
    endforeach()
    pkg_check_modules(DMX_FZ_SRV REQUIRED IMPORTED_TARGET libmicrohttpd libcjson sqlite3)
    dmx_fuzz_lib(dmx_fz_server ${_dmx_fz_srv})
    add_dependencies(dmx_fz_server demix_server) # generates web_assets.c
    target_compile_definitions(dmx_fz_server PRIVATE DEMIX_SERVER_VERSION="${PROJECT_VERSION}")
    target_include_directories(dmx_fz_server PUBLIC ${_dmx_fz_srv_dir}
                               PRIVATE ${PROJECT_BINARY_DIR}/src/server/generated)
    target_link_libraries(dmx_fz_server PUBLIC demix_pipeline demix_audio demix
                          PkgConfig::DMX_FZ_SRV PkgConfig::ZLIB Threads::Threads m)
    dmx_fuzz_binary(http dmx_fz_server)
  endif()
endif()
