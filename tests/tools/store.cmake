# Drives a store provider through store.h alone (test_dovecot.py, tests/bench/delivery.sh).
add_executable(store_tool ${CMAKE_CURRENT_LIST_DIR}/store_tool.c)
target_link_libraries(store_tool PRIVATE mailproto_host)
set_target_properties(store_tool PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
