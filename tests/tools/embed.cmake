# An "existing APR server" that embeds mailproto through include/mailproto/embed.h (test_embed.py).
add_executable(embed_server ${CMAKE_CURRENT_LIST_DIR}/embed_server.c)
target_link_libraries(embed_server PRIVATE mailproto_host)
set_target_properties(embed_server PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
