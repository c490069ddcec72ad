# agentws_embed_console(<out_var>): generates a C++ source holding
# web/console.html as agentws::detail::console_page and puts its path in
# <out_var>. Used by the main build and the fuzz build alike.
function(agentws_embed_console out_var)
  get_filename_component(_root "${CMAKE_CURRENT_FUNCTION_LIST_DIR}/.." ABSOLUTE)
  set(_page ${_root}/web/console.html)
  set(_out ${CMAKE_CURRENT_BINARY_DIR}/generated/console_page.cpp)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_page})
  file(READ ${_page} _html)
  file(WRITE ${_out}.tmp
    "// Generated from web/console.html by CMake. Do not edit.\n"
    "#include <string_view>\n"
    "namespace agentws::detail {\n"
    "extern const std::string_view console_page;\n"
    "const std::string_view console_page = R\"agentws_console(" "${_html}" ")agentws_console\";\n"
    "}  // namespace agentws::detail\n")
  # Copy only when changed, so a reconfigure does not force a rebuild.
  configure_file(${_out}.tmp ${_out} COPYONLY)
  set(${out_var} ${_out} PARENT_SCOPE)
endfunction()
