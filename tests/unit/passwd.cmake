# mod_passwd (the passwd-file auth provider) and the SASL mechanisms of modules/common (sasl.c, b64.c).
mailproto_unit_test(test_passwd SOURCES test_passwd.c fake_host.c LIBS mailproto_passwd_static Threads::Threads)
mailproto_unit_test(test_sasl SOURCES test_sasl.c LIBS mailproto_common)
