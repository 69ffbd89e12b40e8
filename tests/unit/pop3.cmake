# POP3: the parser alone, and mod_pop3 driven by the fake host with in-memory store and auth providers.
mailproto_unit_test(test_pop3_parse SOURCES test_pop3_parse.c ${CMAKE_SOURCE_DIR}/modules/pop3/pop3_parse.c)
target_include_directories(test_pop3_parse PRIVATE ${CMAKE_SOURCE_DIR}/modules/pop3)

mailproto_unit_test(test_pop3 SOURCES test_pop3.c test_pop3_retr.c test_pop3_fake.c fake_host.c ${MAILPROTO_POP3_SOURCES}
  LIBS mailproto_common OpenSSL::Crypto)
target_include_directories(test_pop3 PRIVATE ${CMAKE_SOURCE_DIR}/modules/pop3)
