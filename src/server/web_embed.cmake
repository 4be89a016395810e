# The web page (web/ at the top of the repository) embedded into the server:
# every file of web/ becomes a C array in ${CMAKE_CURRENT_BINARY_DIR}/web_assets.c
# (generated at build time by web_assets.cmake, in CMake alone: no xxd),
# served by web.c at / and /static/<name>. Included by CMakeLists.txt here.
file(GLOB DEMIX_WEB_FILES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/web/*)
set(DEMIX_WEB_ASSETS_C ${CMAKE_CURRENT_BINARY_DIR}/web_assets.c)
add_custom_command(
  OUTPUT ${DEMIX_WEB_ASSETS_C}
  COMMAND ${CMAKE_COMMAND} -DWEB_DIR=${PROJECT_SOURCE_DIR}/web -DOUT=${DEMIX_WEB_ASSETS_C}
          -P ${CMAKE_CURRENT_SOURCE_DIR}/web_assets.cmake
  DEPENDS ${DEMIX_WEB_FILES} ${CMAKE_CURRENT_SOURCE_DIR}/web_assets.cmake
  COMMENT "Embedding web/ into web_assets.c"
  VERBATIM)
target_sources(demix_server PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/web.c ${DEMIX_WEB_ASSETS_C})
