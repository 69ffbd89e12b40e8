# The Maildir++ store provider (modules/maildir) and the modified UTF-7 conversion it uses.
mailproto_unit_test(test_utf7 SOURCES test_utf7.c LIBS mailproto_common)
mailproto_unit_test(test_maildir SOURCES test_maildir.c fake_host.c ${CMAKE_SOURCE_DIR}/modules/maildir/mod_maildir.c
  LIBS maildir_core mailproto_common Threads::Threads)
