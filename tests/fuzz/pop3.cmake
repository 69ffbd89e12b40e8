mailproto_fuzzer(fuzz_pop3 SOURCES fuzz_pop3.c ${CMAKE_SOURCE_DIR}/tests/unit/test_pop3_fake.c ${MAILPROTO_POP3_SOURCES})
target_include_directories(fuzz_pop3 PRIVATE ${CMAKE_SOURCE_DIR}/modules/pop3)
