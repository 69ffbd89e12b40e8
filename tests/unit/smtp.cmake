# mod_smtp and mod_lmtp driven by the fake host with fake store/auth providers (test_smtp_fakes.c).
mailproto_unit_test(test_smtp SOURCES test_smtp.c test_smtp_fakes.c fake_host.c ${MAILPROTO_SMTP_SOURCES}
  LIBS mailproto_common OpenSSL::Crypto)
target_include_directories(test_smtp PRIVATE ${CMAKE_SOURCE_DIR}/modules/smtp)
mailproto_unit_test(test_smtp_lmtp SOURCES test_smtp_lmtp.c test_smtp_fakes.c fake_host.c ${MAILPROTO_SMTP_SOURCES}
  LIBS mailproto_common OpenSSL::Crypto DEFINITIONS SMTP_LMTP=1)
target_include_directories(test_smtp_lmtp PRIVATE ${CMAKE_SOURCE_DIR}/modules/smtp)
mailproto_unit_test(test_smtp_dsn SOURCES test_smtp_dsn.c test_smtp_fakes.c fake_host.c ${MAILPROTO_SMTP_SOURCES}
  LIBS mailproto_common OpenSSL::Crypto)
target_include_directories(test_smtp_dsn PRIVATE ${CMAKE_SOURCE_DIR}/modules/smtp)
