/*
 * Unit tests of the configuration parser (apr_glue/host/config.c): every directive, the address forms,
 * path resolution, quoting, comments, line ends, each error with its exact "FILE:LINE: message", step 2
 * against stub modules, and the size/interval/TLS value parsers.
 */
#include "config.h"

#include <CUnit/Basic.h>
#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static apr_pool_t *g_pool;

#define DIR "/etc/mailproto"
#define MB ((apr_off_t)1024 * 1024)
#define SEC(n) ((apr_interval_time_t)(n) * APR_USEC_PER_SEC)

/* ---------------------------------------------------------------- helpers */

/* A stub of the loaded modules for step 2. */
static const char *check_onoff(const char *value, apr_pool_t *pool)
{
    (void)pool;
    return strcasecmp(value, "on") && strcasecmp(value, "off") ? "expected on or off" : NULL;
}

static const mp_directive stub_directives[] = {
    {"Submission", MP_SCOPE_LISTEN, check_onoff, "AUTH required"},
    {"Banner", MP_SCOPE_GLOBAL | MP_SCOPE_LISTEN, NULL, "greeting text"},
    {"QueueDir", MP_SCOPE_GLOBAL, NULL, "queue folder"},
    {NULL, 0, NULL, NULL},
};

static const mp_directive *stub_find(void *ctx, const char *name)
{
    (void)ctx;
    for (const mp_directive *d = stub_directives; d->name; d++)
        if (!strcasecmp(d->name, name))
            return d;
    return NULL;
}

static int stub_is_protocol(void *ctx, const char *name)
{
    (void)ctx;
    return !strcmp(name, "smtp") || !strcmp(name, "pop3") || !strcmp(name, "imap");
}

static const mph_conf_modules stub_mods = {NULL, stub_find, stub_is_protocol};

static void report(int ok, int line, const char *what, const char *expect, const char *got)
{
    if (!ok)
        fprintf(stderr, "\n    test_config.c:%d: %s: expected \"%s\", got \"%s\"\n", line, what, expect,
                got ? got : "(NULL)");
    CU_assertImplementation(ok ? CU_TRUE : CU_FALSE, (unsigned)line, what, __FILE__, "", CU_FALSE);
}

/* Parses text that must be valid; NULL (and a failed assert) otherwise. */
#define OK(text) ok_at(text, __LINE__)
static mph_conf *ok_at(const char *text, int line)
{
    mph_conf *conf = NULL;
    const char *err = mph_conf_parse_string(g_pool, "t.conf", DIR, text, &conf);
    report(err == NULL, line, "parse", "(no error)", err);
    return err ? NULL : conf;
}

/* Parses text that must fail with exactly `expect`. */
#define BAD(text, expect) bad_at(text, expect, __LINE__)
static void bad_at(const char *text, const char *expect, int line)
{
    mph_conf *conf = NULL;
    const char *err = mph_conf_parse_string(g_pool, "t.conf", DIR, text, &conf);
    report(err && !strcmp(err, expect), line, "parse error", expect, err);
}

/* Parses valid text, then step 2 must fail with exactly `expect` (or succeed when expect is NULL). */
#define RESOLVE(text, expect) resolve_at(text, expect, __LINE__)
static void resolve_at(const char *text, const char *expect, int line)
{
    mph_conf *conf = ok_at(text, line);
    const char *err;

    if (!conf)
        return;
    err = mph_conf_resolve(conf, &stub_mods);
    report(expect ? err && !strcmp(err, expect) : !err, line, "resolve", expect ? expect : "(no error)", err);
}

#define STR_EQ(a, b) CU_ASSERT_STRING_EQUAL((a) ? (a) : "(NULL)", b)

static const mph_listen_conf *listener(const mph_conf *c, int i)
{
    return APR_ARRAY_IDX(c->listeners, i, mph_listen_conf *);
}

static const mph_module_conf *module(const mph_conf *c, int i)
{
    return &APR_ARRAY_IDX(c->modules, i, mph_module_conf);
}

static const mph_extra_directive *extra(const apr_array_header_t *a, int i)
{
    return &APR_ARRAY_IDX(a, i, mph_extra_directive);
}

/* Common head of many test files: the modules the <Listen> blocks name. */
#define MODS "LoadModule smtp mod_smtp.so\nLoadModule imap mod_imap.so\n"

/* ---------------------------------------------------------------- valid files */

static const char design_conf[] =
    "# the example of DESIGN.md section 5, and the other core directives\n"        /* 1 */
    "ServerName    mail.example.test\n"                                             /* 2 */
    "ModuleDir     modules                  # where LoadModule looks\n"             /* 3 */
    "LoadModule    smtp      mod_smtp.so\n"                                         /* 4 */
    "LoadModule    pop3      mod_pop3.so\n"                                         /* 5 */
    "LoadModule    imap      mod_imap.so\n"                                         /* 6 */
    "LoadModule    maildir   mod_maildir.so\n"                                      /* 7 */
    "LoadModule    passwd    mod_passwd.so\n"                                       /* 8 */
    "StateDir      state                    # pid file, control socket, queue\n"    /* 9 */
    "User          mail                     # switch to this user after binding\n"  /* 10 */
    "LocalDomains  example.test\n"                                                  /* 11 */
    "MailStore     maildir:mail/%d/%n       # %d domain, %n local part\n"           /* 12 */
    "UserDB        passwd-file:users\n"                                             /* 13 */
    "TLSCertificateFile    cert.pem\n"                                              /* 14 */
    "TLSCertificateKeyFile key.pem\n"                                               /* 15 */
    "MaxMessageSize 50M\n"                                                          /* 16 */
    "\n"                                                                            /* 17 */
    "<Listen 127.0.0.1:25>\n"                                                       /* 18 */
    "    Protocol smtp\n"                                                           /* 19 */
    "    TLS      starttls                  # off | starttls | required | implicit\n" /* 20 */
    "</Listen>\n"                                                                   /* 21 */
    "<Listen 127.0.0.1:587>\n"                                                      /* 22 */
    "    Protocol   smtp\n"                                                         /* 23 */
    "    TLS        required                # STARTTLS before AUTH and mail\n"      /* 24 */
    "    Submission on                      # AUTH required\n"                      /* 25 */
    "</Listen>\n"                                                                   /* 26 */
    "<Listen 127.0.0.1:465>\n"                                                      /* 27 */
    "    Protocol   smtp\n"                                                         /* 28 */
    "    TLS        implicit\n"                                                     /* 29 */
    "    Submission on\n"                                                           /* 30 */
    "</Listen>\n"                                                                   /* 31 */
    "<Listen 127.0.0.1:993>\n"                                                      /* 32 */
    "    Protocol imap\n"                                                           /* 33 */
    "    TLS      implicit\n"                                                       /* 34 */
    "</Listen>\n"                                                                   /* 35 */
    "LogLevel debug\n"                                                              /* 36 */
    "Threads 2\n"                                                                   /* 37 */
    "Workers 8\n"                                                                   /* 38 */
    "MaxLineLength 16K\n"                                                           /* 39 */
    "MaxErrors 5\n"                                                                 /* 40 */
    "IdleTimeout 5m\n"                                                              /* 41 */
    "ShutdownTimeout 250ms\n"                                                       /* 42 */
    "MaxConnections 200\n"                                                          /* 43 */
    "MaxConnectionsPerClient 7\n"                                                   /* 44 */
    "Banner \"Welcome, # friends\"\n";                                              /* 45 */

static void test_design_example(void)
{
    static const char *const names[] = {"smtp", "pop3", "imap", "maildir", "passwd"};
    static const struct { const char *addr; apr_port_t port; const char *proto; mp_tls_mode tls; int line; }
        ls[] = {{"127.0.0.1:25", 25, "smtp", MP_TLS_STARTTLS, 18},
                {"127.0.0.1:587", 587, "smtp", MP_TLS_REQUIRED, 22},
                {"127.0.0.1:465", 465, "smtp", MP_TLS_IMPLICIT, 27},
                {"127.0.0.1:993", 993, "imap", MP_TLS_IMPLICIT, 32}};
    mph_conf *c = OK(design_conf);

    if (!c)
        return;
    CU_ASSERT_PTR_EQUAL(c->pool, g_pool);
    STR_EQ(c->file, DIR "/t.conf");
    STR_EQ(c->dir, DIR);
    STR_EQ(c->server_name, "mail.example.test");
    STR_EQ(c->module_dir, DIR "/modules");
    STR_EQ(c->state_dir, DIR "/state");
    STR_EQ(c->user, "mail");
    STR_EQ(c->cert_file, DIR "/cert.pem");
    STR_EQ(c->key_file, DIR "/key.pem");
    STR_EQ(c->log_level, "debug");
    CU_ASSERT_EQUAL(c->threads, 2);
    CU_ASSERT_EQUAL(c->workers, 8);
    CU_ASSERT_EQUAL(c->max_line, 16384);
    CU_ASSERT_EQUAL(c->max_errors, 5);
    CU_ASSERT_EQUAL(c->idle_timeout, SEC(300));
    CU_ASSERT_EQUAL(c->shutdown_timeout, 250000);
    CU_ASSERT_EQUAL(c->max_connections, 200);
    CU_ASSERT_EQUAL(c->max_per_client, 7);
    CU_ASSERT_EQUAL(c->max_message_size, 50 * MB);

    CU_ASSERT_EQUAL_FATAL(c->modules->nelts, 5);
    for (int i = 0; i < 5; i++) {
        STR_EQ(module(c, i)->name, names[i]);
        STR_EQ(module(c, i)->path, apr_psprintf(g_pool, DIR "/modules/mod_%s.so", names[i]));
        CU_ASSERT_EQUAL(module(c, i)->line, 4 + i);
    }

    /* values: raw text of every global directive, core ones too */
    STR_EQ(apr_table_get(c->values, "ServerName"), "mail.example.test");
    STR_EQ(apr_table_get(c->values, "ModuleDir"), "modules");
    STR_EQ(apr_table_get(c->values, "StateDir"), "state");
    STR_EQ(apr_table_get(c->values, "LocalDomains"), "example.test");
    STR_EQ(apr_table_get(c->values, "MailStore"), "maildir:mail/%d/%n");
    STR_EQ(apr_table_get(c->values, "UserDB"), "passwd-file:users");
    STR_EQ(apr_table_get(c->values, "TLSCertificateFile"), "cert.pem");
    STR_EQ(apr_table_get(c->values, "maxmessagesize"), "50M");   /* lookups are case-insensitive */
    STR_EQ(apr_table_get(c->values, "IdleTimeout"), "5m");
    STR_EQ(apr_table_get(c->values, "LoadModule"), "smtp      mod_smtp.so");
    STR_EQ(apr_table_get(c->values, "Banner"), "Welcome, # friends");
    CU_ASSERT_PTR_NULL(apr_table_get(c->values, "Protocol"));
    {
        int n = 0;
        const apr_array_header_t *a = apr_table_elts(c->values);
        for (int i = 0; i < a->nelts; i++)
            n += !strcasecmp(APR_ARRAY_IDX(a, i, apr_table_entry_t).key, "LoadModule");
        CU_ASSERT_EQUAL(n, 5);
    }

    /* the one global directive the core does not know, kept for step 2 */
    CU_ASSERT_EQUAL_FATAL(c->extra->nelts, 1);
    STR_EQ(extra(c->extra, 0)->name, "Banner");
    STR_EQ(extra(c->extra, 0)->value, "Welcome, # friends");
    CU_ASSERT_EQUAL(extra(c->extra, 0)->line, 45);

    CU_ASSERT_EQUAL_FATAL(c->listeners->nelts, 4);
    for (int i = 0; i < 4; i++) {
        const mph_listen_conf *l = listener(c, i);
        STR_EQ(l->address, ls[i].addr);
        STR_EQ(l->host, "127.0.0.1");
        CU_ASSERT_EQUAL(l->port, ls[i].port);
        CU_ASSERT_EQUAL(l->family, APR_INET);
        STR_EQ(l->protocol, ls[i].proto);
        CU_ASSERT_EQUAL(l->tls, ls[i].tls);
        CU_ASSERT_PTR_NULL(l->cert_file);
        CU_ASSERT_PTR_NULL(l->key_file);
        CU_ASSERT_EQUAL(l->max_connections, 200);  /* the global, which came after the blocks */
        CU_ASSERT_EQUAL(l->max_per_client, 7);
        CU_ASSERT_EQUAL(l->line, ls[i].line);
        CU_ASSERT_EQUAL(l->protocol_line, ls[i].line + 1);
        STR_EQ(apr_table_get(l->values, "Protocol"), ls[i].proto);
        CU_ASSERT_PTR_NOT_NULL(apr_table_get(l->values, "TLS"));
    }
    STR_EQ(apr_table_get(listener(c, 0)->values, "tls"), "starttls");
    CU_ASSERT_EQUAL(listener(c, 0)->extra->nelts, 0);
    CU_ASSERT_PTR_NULL(apr_table_get(listener(c, 0)->values, "Submission"));
    CU_ASSERT_EQUAL_FATAL(listener(c, 1)->extra->nelts, 1);
    STR_EQ(extra(listener(c, 1)->extra, 0)->name, "Submission");
    STR_EQ(extra(listener(c, 1)->extra, 0)->value, "on");
    CU_ASSERT_EQUAL(extra(listener(c, 1)->extra, 0)->line, 25);
    STR_EQ(apr_table_get(listener(c, 1)->values, "Submission"), "on");
    CU_ASSERT_EQUAL(extra(listener(c, 2)->extra, 0)->line, 30);

    CU_ASSERT_PTR_NULL(mph_conf_resolve(c, &stub_mods));
}

static void test_defaults(void)
{
    mph_conf *c = OK("LoadModule smtp mod_smtp.so\n<Listen *:25>\nProtocol smtp\n</Listen>\n");
    const mph_listen_conf *l;

    if (!c)
        return;
    CU_ASSERT_PTR_NOT_NULL(c->server_name);
    CU_ASSERT(c->server_name && *c->server_name);
    STR_EQ(c->module_dir, DIR);
    STR_EQ(module(c, 0)->path, DIR "/mod_smtp.so");
    STR_EQ(c->state_dir, DIR "/state");
    CU_ASSERT_PTR_NULL(c->user);
    CU_ASSERT_PTR_NULL(c->cert_file);
    CU_ASSERT_PTR_NULL(c->key_file);
    STR_EQ(c->log_level, "notice");
    CU_ASSERT_EQUAL(c->threads, 0);
    CU_ASSERT_EQUAL(c->workers, 16);
    CU_ASSERT_EQUAL(c->max_line, 8192);
    CU_ASSERT_EQUAL(c->max_errors, 10);
    CU_ASSERT_EQUAL(c->idle_timeout, SEC(300));
    CU_ASSERT_EQUAL(c->shutdown_timeout, SEC(10));
    CU_ASSERT_EQUAL(c->max_connections, 1000);
    CU_ASSERT_EQUAL(c->max_per_client, 50);
    CU_ASSERT_EQUAL(c->max_message_size, 50 * MB);
    CU_ASSERT_EQUAL(c->extra->nelts, 0);
    CU_ASSERT_PTR_NULL(apr_table_get(c->values, "ServerName"));   /* defaults are not in values */

    l = listener(c, 0);
    STR_EQ(l->address, "*:25");
    CU_ASSERT_PTR_NULL(l->host);
    CU_ASSERT_EQUAL(l->family, APR_UNSPEC);
    CU_ASSERT_EQUAL(l->port, 25);
    CU_ASSERT_EQUAL(l->tls, MP_TLS_OFF);
    CU_ASSERT_EQUAL(l->max_connections, 1000);
    CU_ASSERT_EQUAL(l->max_per_client, 50);
    CU_ASSERT_PTR_NULL(apr_table_get(l->values, "TLS"));

    /* an empty file and a file of comments are valid (the daemon decides whether no listener is ok) */
    c = OK("");
    CU_ASSERT(c && c->listeners->nelts == 0 && c->modules->nelts == 0);
    c = OK("# nothing\n\n   \t\n  # indented comment\n");
    CU_ASSERT(c && c->listeners->nelts == 0 && apr_is_empty_table(c->values));
}

static void test_addresses(void)
{
    mph_conf *c = OK(MODS "<Listen [::1]:143>\nProtocol imap\n</Listen>\n"
                          "<Listen [2001:db8::1]:993>\nProtocol imap\n</Listen>\n"
                          "<Listen *:143>\nProtocol imap\n</Listen>\n"
                          "<Listen 0.0.0.0:143>\nProtocol imap\n</Listen>\n"   /* other family than [::]... */
                          "<Listen [::]:143>\nProtocol imap\n</Listen>\n"
                          "<Listen 10.1.2.3:65535>\nProtocol smtp\n</Listen>\n"
                          "<Listen 10.1.2.3:1>\nProtocol smtp\n</Listen>\n");
    if (!c)
        return;
    CU_ASSERT_EQUAL_FATAL(c->listeners->nelts, 7);
    STR_EQ(listener(c, 0)->address, "[::1]:143");
    STR_EQ(listener(c, 0)->host, "::1");
    CU_ASSERT_EQUAL(listener(c, 0)->family, APR_INET6);
    CU_ASSERT_EQUAL(listener(c, 0)->port, 143);
    STR_EQ(listener(c, 1)->host, "2001:db8::1");
    CU_ASSERT_EQUAL(listener(c, 1)->family, APR_INET6);
    CU_ASSERT_EQUAL(listener(c, 1)->port, 993);
    CU_ASSERT_PTR_NULL(listener(c, 2)->host);
    CU_ASSERT_EQUAL(listener(c, 2)->family, APR_UNSPEC);
    STR_EQ(listener(c, 3)->host, "0.0.0.0");
    CU_ASSERT_EQUAL(listener(c, 3)->family, APR_INET);
    STR_EQ(listener(c, 4)->host, "::");
    CU_ASSERT_EQUAL(listener(c, 5)->port, 65535);
    CU_ASSERT_EQUAL(listener(c, 6)->port, 1);
    CU_ASSERT_EQUAL(listener(c, 6)->line, 21);

    static const char *const bad[] = {
        "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:99999999999999999999", "127.0.0.1", "127.0.0.1:",
        ":25", "::1:25", "[::1]", "[::1]:", "[::1:25", "[]:25", "[127.0.0.1]:25", "localhost:25",
        "256.1.1.1:25", "127.0.0.1:25x", "127.0.0.1:-1", "127.0.0.1:+25", "*:abc", "**:25", "[*]:25",
        "[::1%lo]:25",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        BAD(apr_psprintf(g_pool, MODS "<Listen %s>\nProtocol smtp\n</Listen>\n", bad[i]),
            apr_psprintf(g_pool, "t.conf:3: bad address '%s' (expected IPv4:PORT, [IPv6]:PORT or *:PORT, "
                                 "port 1-65535)", bad[i]));
}

static void test_duplicate_address(void)
{
    BAD(MODS "<Listen 127.0.0.1:25>\nProtocol smtp\n</Listen>\n\n<Listen 127.0.0.1:25>\nProtocol smtp\n"
             "</Listen>\n",
        "t.conf:7: duplicate address 127.0.0.1:25 (already at line 3)");
    /* the same IPv6 address written two ways */
    BAD(MODS "<Listen [::1]:143>\nProtocol imap\n</Listen>\n<Listen [0:0::0001]:143>\nProtocol imap\n"
             "</Listen>\n",
        "t.conf:6: duplicate address [0:0::0001]:143 (already at line 3)");
    BAD(MODS "<Listen *:25>\nProtocol smtp\n</Listen>\n<Listen *:25>\nProtocol smtp\n</Listen>\n",
        "t.conf:6: duplicate address *:25 (already at line 3)");
    /* same port, other host or family: fine */
    CU_ASSERT_PTR_NOT_NULL(OK(MODS "<Listen 127.0.0.1:25>\nProtocol smtp\n</Listen>\n"
                                   "<Listen 127.0.0.2:25>\nProtocol smtp\n</Listen>\n"
                                   "<Listen [::1]:25>\nProtocol smtp\n</Listen>\n"
                                   "<Listen *:25>\nProtocol smtp\n</Listen>\n"
                                   "<Listen 127.0.0.1:26>\nProtocol smtp\n</Listen>\n"));
}

static void test_paths(void)
{
    mph_conf *c = OK("LoadModule smtp mod_smtp.so\n"        /* before its ModuleDir */
                     "LoadModule imap /opt/mp/mod_imap.so\n"  /* absolute: ModuleDir does not apply */
                     "LoadModule pop3 ../lib/mod_pop3.so\n"
                     "LoadModule \"my mod\" \"my module.so\"\n"
                     "ModuleDir ../mailproto-modules\n"
                     "StateDir /var/lib/mailproto\n"
                     "TLSCertificateFile /etc/ssl/mail.pem\n"
                     "TLSCertificateKeyFile \"private/my key.pem\"\n"
                     "<Listen *:993>\nProtocol imap\nTLS implicit\n"
                     "TLSCertificateFile imap/cert.pem\nTLSCertificateKeyFile /k/imap.key\n</Listen>\n");
    if (!c)
        return;
    STR_EQ(c->module_dir, "/etc/mailproto-modules");
    STR_EQ(module(c, 0)->path, "/etc/mailproto-modules/mod_smtp.so");
    STR_EQ(module(c, 1)->path, "/opt/mp/mod_imap.so");
    STR_EQ(module(c, 2)->path, "/etc/lib/mod_pop3.so");
    STR_EQ(module(c, 3)->name, "my mod");
    STR_EQ(module(c, 3)->path, "/etc/mailproto-modules/my module.so");
    STR_EQ(c->state_dir, "/var/lib/mailproto");
    STR_EQ(c->cert_file, "/etc/ssl/mail.pem");
    STR_EQ(c->key_file, DIR "/private/my key.pem");
    STR_EQ(apr_table_get(c->values, "TLSCertificateKeyFile"), "private/my key.pem");
    STR_EQ(listener(c, 0)->cert_file, DIR "/imap/cert.pem");
    STR_EQ(listener(c, 0)->key_file, "/k/imap.key");
    STR_EQ(apr_table_get(listener(c, 0)->values, "TLSCertificateFile"), "imap/cert.pem");

    /* ModuleDir absolute */
    c = OK("ModuleDir /usr/lib/mailproto/\nLoadModule smtp mod_smtp.so\n");
    if (c)
        STR_EQ(module(c, 0)->path, "/usr/lib/mailproto/mod_smtp.so");

    /* the folder given to parse_string may itself be relative: it resolves against the working folder */
    {
        char *cwd;
        mph_conf *r = NULL;
        CU_ASSERT_EQUAL_FATAL(apr_filepath_get(&cwd, 0, g_pool), APR_SUCCESS);
        CU_ASSERT_PTR_NULL(mph_conf_parse_string(g_pool, "x.conf", "sub", "StateDir st\n", &r));
        if (r) {
            STR_EQ(r->dir, apr_pstrcat(g_pool, cwd, "/sub", NULL));
            STR_EQ(r->state_dir, apr_pstrcat(g_pool, cwd, "/sub/st", NULL));
            STR_EQ(r->file, apr_pstrcat(g_pool, cwd, "/sub/x.conf", NULL));
        }
    }
}

static void test_quotes_and_comments(void)
{
    mph_conf *c = OK("ServerName \"mail # not a comment\"\n"
                     "User mail#x\n"                       /* '#' not after whitespace: part of the value */
                     "LocalDomains a.test b.test   # two domains\n"
                     "MailStore \"\"\"\"\n"                /* "" "" : not one quoted string, kept as written */
                     "Banner \"\"\n"                       /* an empty quoted value for a module directive */
                     "Greeting \"  spaced  \"\t# comment\n"
                     "\t# indented comment\n"
                     "#LoadModule smtp mod_smtp.so\n"
                     "LoadModule smtp mod_smtp.so # trailing\n"
                     "<Listen *:25>   # the smtp port\n"
                     "Protocol \"smtp\"\n"
                     "</Listen>  # end\n");
    if (!c)
        return;
    STR_EQ(c->server_name, "mail # not a comment");
    STR_EQ(c->user, "mail#x");
    STR_EQ(apr_table_get(c->values, "LocalDomains"), "a.test b.test");
    STR_EQ(apr_table_get(c->values, "MailStore"), "\"\"\"\"");
    STR_EQ(apr_table_get(c->values, "Banner"), "");
    STR_EQ(apr_table_get(c->values, "Greeting"), "  spaced  ");
    CU_ASSERT_EQUAL(c->modules->nelts, 1);
    STR_EQ(module(c, 0)->path, DIR "/mod_smtp.so");
    CU_ASSERT_EQUAL(c->listeners->nelts, 1);
    if (c->listeners->nelts == 1)
        STR_EQ(listener(c, 0)->protocol, "smtp");

    BAD("ServerName \"mail.example.test\n", "t.conf:1: missing closing quote");
    BAD("\n\nUser \"a\" \"b\n", "t.conf:3: missing closing quote");
    BAD("ServerName \"\"\n", "t.conf:1: 'ServerName' needs a value");
}

static void test_line_ends(void)
{
    mph_conf *c = OK("\xEF\xBB\xBFServerName crlf.test\r\n"
                     "LoadModule smtp mod_smtp.so\r\n"
                     "\r\n"
                     "<Listen *:25>\r\n"
                     "  Protocol smtp\r\n"
                     "  TLS off\r\n"
                     "</Listen>\r\n"
                     "User last   ");    /* no final line end */
    if (!c)
        return;
    STR_EQ(c->server_name, "crlf.test");
    STR_EQ(module(c, 0)->path, DIR "/mod_smtp.so");
    STR_EQ(c->user, "last");
    CU_ASSERT_EQUAL(listener(c, 0)->line, 4);
    STR_EQ(listener(c, 0)->protocol, "smtp");

    /* line numbers count CRLF lines */
    BAD("ServerName a\r\n\r\nThreads x\r\n", "t.conf:3: bad number 'x' for Threads (expected a whole number >= 0)");
}

static void test_case_insensitive(void)
{
    mph_conf *c = OK("servername lower.test\nLOADMODULE smtp mod_smtp.so\nmaxmessagesize 1g\n"
                     "<listen *:25>\nPROTOCOL smtp\ntls StartTLS\ntlscertificatefile c.pem\n"
                     "TLSCERTIFICATEKEYFILE k.pem\n</LISTEN>\n");
    if (!c)
        return;
    STR_EQ(c->server_name, "lower.test");
    CU_ASSERT_EQUAL(c->max_message_size, 1024 * MB);
    CU_ASSERT_EQUAL(listener(c, 0)->tls, MP_TLS_STARTTLS);
    STR_EQ(listener(c, 0)->cert_file, DIR "/c.pem");
    STR_EQ(apr_table_get(c->values, "ServerName"), "lower.test");
    CU_ASSERT_EQUAL(c->extra->nelts, 0);
    /* module names (LoadModule, Protocol) are not directive names: they are matched exactly */
    BAD("LoadModule smtp mod_smtp.so\n<Listen *:25>\nProtocol SMTP\n</Listen>\n",
        "t.conf:3: no LoadModule for Protocol 'SMTP'");
}

static void test_listen_overrides(void)
{
    mph_conf *c = OK(MODS "<Listen *:25>\nProtocol smtp\nMaxConnections 3\nMaxConnectionsPerClient 2\n"
                          "TLS starttls\nTLS off\nBanner hi\nBanner ho\n</Listen>\n"
                          "<Listen *:143>\nProtocol imap\nMaxConnectionsPerClient 9\n</Listen>\n"
                          "MaxConnections 77\nServerName one\nServerName two\n");
    if (!c)
        return;
    CU_ASSERT_EQUAL(listener(c, 0)->max_connections, 3);
    CU_ASSERT_EQUAL(listener(c, 0)->max_per_client, 2);
    CU_ASSERT_EQUAL(listener(c, 0)->tls, MP_TLS_OFF);          /* the last one wins */
    STR_EQ(apr_table_get(listener(c, 0)->values, "TLS"), "off");
    STR_EQ(apr_table_get(listener(c, 0)->values, "MaxConnections"), "3");
    STR_EQ(apr_table_get(listener(c, 0)->values, "Banner"), "ho");
    CU_ASSERT_EQUAL(listener(c, 0)->extra->nelts, 2);          /* each is checked in step 2 */
    CU_ASSERT_EQUAL(listener(c, 1)->max_connections, 77);
    CU_ASSERT_EQUAL(listener(c, 1)->max_per_client, 9);
    CU_ASSERT_EQUAL(c->max_connections, 77);
    STR_EQ(c->server_name, "two");
    STR_EQ(apr_table_get(c->values, "ServerName"), "two");
    CU_ASSERT_PTR_NULL(apr_table_get(c->values, "MaxConnectionsPerClient"));   /* only in a block */
}

/* ---------------------------------------------------------------- errors of step 1 */

static void test_block_errors(void)
{
    BAD("<Virtual *:25>\n</Virtual>\n", "t.conf:1: unknown block <Virtual>");
    BAD(MODS "<Listen *:25>\nProtocol smtp\n</Virtual>\n", "t.conf:5: unknown block </Virtual>");
    BAD("<>\n", "t.conf:1: unknown block <>");
    BAD("ServerName a\n</Listen>\n", "t.conf:2: </Listen> without <Listen>");
    BAD(MODS "<Listen *:25>\nProtocol smtp\n</Listen>\n</Listen>\n", "t.conf:6: </Listen> without <Listen>");
    BAD(MODS "\n<Listen *:25>\nProtocol smtp\n", "t.conf:4: <Listen *:25> is missing </Listen>");
    BAD(MODS "<Listen *:25>\nProtocol smtp\n<Listen *:26>\n",
        "t.conf:5: <Listen> blocks do not nest (the one at line 3 is still open)");
    BAD("<Listen *:25\n", "t.conf:1: missing '>' at the end of <Listen *:25");
    BAD("<Listen>\n", "t.conf:1: <Listen> takes one address, e.g. <Listen 127.0.0.1:25>");
    BAD("<Listen *:25 *:26>\n", "t.conf:1: <Listen> takes one address, e.g. <Listen 127.0.0.1:25>");
    BAD(MODS "<Listen *:25>\nProtocol smtp\n</Listen *:25>\n", "t.conf:5: </Listen> takes no arguments");
    /* no Protocol: reported at the <Listen line */
    BAD(MODS "\n<Listen *:25>\nTLS off\n</Listen>\n", "t.conf:4: <Listen *:25> has no Protocol");
}

static void test_protocol_errors(void)
{
    /* Protocol naming no LoadModule, at the Protocol line */
    BAD(MODS "<Listen *:110>\n\n  Protocol pop3\n</Listen>\n", "t.conf:5: no LoadModule for Protocol 'pop3'");
    /* LoadModule may come after the block */
    CU_ASSERT_PTR_NOT_NULL(OK("<Listen *:110>\nProtocol pop3\n</Listen>\nLoadModule pop3 mod_pop3.so\n"));
    BAD(MODS "<Listen *:25>\nProtocol smtp imap\n</Listen>\n", "t.conf:4: Protocol takes one module name");
    BAD(MODS "LoadModule smtp other.so\n", "t.conf:3: duplicate LoadModule 'smtp' (first at line 1)");
    BAD("LoadModule smtp\n", "t.conf:1: LoadModule needs a module name and a file");
    BAD("LoadModule smtp a.so b.so\n", "t.conf:1: LoadModule needs a module name and a file");
}

static void test_tls_errors(void)
{
    BAD(MODS "<Listen *:25>\nProtocol smtp\nTLS yes\n</Listen>\n",
        "t.conf:5: bad TLS mode 'yes' (expected off, starttls, required or implicit)");
    static const char *const modes[] = {"starttls", "required", "implicit"};
    for (int i = 0; i < 3; i++)
        BAD(apr_psprintf(g_pool, MODS "<Listen *:25>\nProtocol smtp\n\nTLS %s\n</Listen>\n", modes[i]),
            "t.conf:6: TLS needs TLSCertificateFile and TLSCertificateKeyFile");
    /* a certificate without its key, in either scope */
    BAD(MODS "TLSCertificateFile c.pem\n<Listen *:25>\nProtocol smtp\nTLS implicit\n</Listen>\n",
        "t.conf:6: TLS needs TLSCertificateFile and TLSCertificateKeyFile");
    BAD(MODS "<Listen *:25>\nProtocol smtp\nTLS implicit\nTLSCertificateKeyFile k.pem\n</Listen>\n",
        "t.conf:5: TLS needs TLSCertificateFile and TLSCertificateKeyFile");
    /* fine: TLS off without any certificate, a block's own pair, a global pair after the block, a mix */
    CU_ASSERT_PTR_NOT_NULL(OK(MODS "<Listen *:25>\nProtocol smtp\nTLS off\n</Listen>\n"));
    CU_ASSERT_PTR_NOT_NULL(OK(MODS "<Listen *:25>\nProtocol smtp\nTLS required\nTLSCertificateFile c\n"
                                   "TLSCertificateKeyFile k\n</Listen>\n"));
    CU_ASSERT_PTR_NOT_NULL(OK(MODS "<Listen *:25>\nProtocol smtp\nTLS implicit\n</Listen>\n"
                                   "TLSCertificateFile c\nTLSCertificateKeyFile k\n"));
    CU_ASSERT_PTR_NOT_NULL(OK(MODS "TLSCertificateKeyFile k\n<Listen *:25>\nProtocol smtp\nTLS starttls\n"
                                   "TLSCertificateFile c\n</Listen>\n"));
}

static void test_value_errors(void)
{
    static const char num[] = "(expected a whole number >= %d)";
    static const struct { const char *line, *expect; } cases[] = {
        {"Threads -1", "bad number '-1' for Threads "},
        {"Threads 1.5", "bad number '1.5' for Threads "},
        {"Threads 2147483648", "bad number '2147483648' for Threads "},
        {"Workers 0", "bad number '0' for Workers "},
        {"Workers many", "bad number 'many' for Workers "},
        {"MaxErrors 0", "bad number '0' for MaxErrors "},
        {"MaxConnections 99999999999", "bad number '99999999999' for MaxConnections "},
        {"MaxConnectionsPerClient 0", "bad number '0' for MaxConnectionsPerClient "},
        {"MaxMessageSize 50X", "bad size '50X' for MaxMessageSize (expected e.g. 1000, 64K, 50M, 1G)"},
        {"MaxMessageSize 0", "bad size '0' for MaxMessageSize (expected e.g. 1000, 64K, 50M, 1G)"},
        {"MaxMessageSize -5M", "bad size '-5M' for MaxMessageSize (expected e.g. 1000, 64K, 50M, 1G)"},
        {"MaxMessageSize 50 M", "bad size '50 M' for MaxMessageSize (expected e.g. 1000, 64K, 50M, 1G)"},
        {"MaxLineLength 3G", "bad size '3G' for MaxLineLength (expected e.g. 1000, 64K, 50M, 1G)"},
        {"IdleTimeout 5x", "bad interval '5x' for IdleTimeout (expected e.g. 300, 30s, 5m, 1h, 250ms)"},
        {"IdleTimeout 0", "bad interval '0' for IdleTimeout (expected e.g. 300, 30s, 5m, 1h, 250ms)"},
        {"ShutdownTimeout -1s",
         "bad interval '-1s' for ShutdownTimeout (expected e.g. 300, 30s, 5m, 1h, 250ms)"},
        {"LogLevel verbose", "bad LogLevel 'verbose' (expected error, warn, notice, info or debug)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *e = cases[i].expect;
        if (e[strlen(e) - 1] == ' ')   /* a number: complete the message with its minimum */
            e = apr_pstrcat(g_pool, e, apr_psprintf(g_pool, num, strstr(e, "Threads") ? 0 : 1), NULL);
        BAD(apr_psprintf(g_pool, "ServerName x\n%s\n", cases[i].line), apr_pstrcat(g_pool, "t.conf:2: ", e, NULL));
    }
    /* inside a block */
    BAD(MODS "<Listen *:25>\nProtocol smtp\nMaxConnections none\n</Listen>\n",
        "t.conf:5: bad number 'none' for MaxConnections (expected a whole number >= 1)");
    /* valid edges */
    mph_conf *c = OK("Threads 0\nMaxConnections 2147483647\nShutdownTimeout 0\nMaxLineLength 1\n"
                     "MaxMessageSize 8589934591G\nLogLevel WARN\nIdleTimeout 1h\n");
    if (c) {
        CU_ASSERT_EQUAL(c->max_connections, 2147483647);
        CU_ASSERT_EQUAL(c->shutdown_timeout, 0);
        CU_ASSERT_EQUAL(c->max_line, 1);
        CU_ASSERT_EQUAL(c->max_message_size, (apr_off_t)8589934591 * 1024 * MB);
        STR_EQ(c->log_level, "warn");
        CU_ASSERT_EQUAL(c->idle_timeout, SEC(3600));
    }
}

static void test_missing_values(void)
{
    BAD("ServerName\n", "t.conf:1: 'ServerName' needs a value");
    BAD("\nServerName     # only a comment\n", "t.conf:2: 'ServerName' needs a value");
    BAD("Frobnicate\n", "t.conf:1: 'Frobnicate' needs a value");
    BAD("servername\n", "t.conf:1: 'ServerName' needs a value");   /* the canonical name */
    BAD(MODS "<Listen *:25>\nProtocol\n</Listen>\n", "t.conf:4: 'Protocol' needs a value");
    BAD(MODS "<Listen *:25>\nProtocol smtp\nSubmission\t\n</Listen>\n", "t.conf:5: 'Submission' needs a value");
}

static void test_scope_errors(void)
{
    static const char *const global_only[] = {
        "LoadModule", "ModuleDir", "StateDir", "User", "ServerName", "Threads", "Workers", "LogLevel",
        "ShutdownTimeout", "MaxLineLength", "MaxErrors", "MaxMessageSize", "LocalDomains",
        "MailStore", "UserDB",
    };
    for (size_t i = 0; i < sizeof(global_only) / sizeof(global_only[0]); i++)
        BAD(apr_psprintf(g_pool, MODS "<Listen *:25>\nProtocol smtp\n  %s 1\n</Listen>\n", global_only[i]),
            apr_psprintf(g_pool, "t.conf:5: '%s' is not allowed inside <Listen>", global_only[i]));
    /* the canonical name, however it was written */
    BAD(MODS "<Listen *:25>\nservername x\n</Listen>\n", "t.conf:4: 'ServerName' is not allowed inside <Listen>");
    BAD("Protocol smtp\n", "t.conf:1: 'Protocol' is only allowed inside <Listen>");
    /* IdleTimeout: a listener's own (RFC 1939 wants 10 minutes for POP3, RFC 5321 5 for SMTP), or the global */
    mph_conf *c;
    CU_ASSERT_PTR_NULL_FATAL(mph_conf_parse_string(g_pool, "t.conf", "/etc/mp",
                                                   MODS "<Listen *:25>\nProtocol smtp\nIdleTimeout 10m\n</Listen>\n"
                                                        "<Listen *:26>\nProtocol smtp\n</Listen>\nIdleTimeout 2m\n",
                                                   &c));
    CU_ASSERT_EQUAL(APR_ARRAY_IDX(c->listeners, 0, mph_listen_conf *)->idle_timeout, apr_time_from_sec(600));
    CU_ASSERT_EQUAL(APR_ARRAY_IDX(c->listeners, 1, mph_listen_conf *)->idle_timeout, apr_time_from_sec(120));
    BAD("\ntls implicit\n", "t.conf:2: 'TLS' is only allowed inside <Listen>");
}

static void test_line_length(void)
{
    char *line = apr_palloc(g_pool, 8300);
    mph_conf *c;

    /* exactly 8192 bytes (without the line end) is fine, CR not counted */
    memset(line, 'a', 8192);
    memcpy(line, "User ", 5);
    strcpy(line + 8192, "\r\nThreads 1\n");
    c = OK(line);
    CU_ASSERT(c && strlen(c->user) == 8187);
    memset(line, 'a', 8193);
    memcpy(line, "User ", 5);
    strcpy(line + 8193, "\n");
    BAD(apr_pstrcat(g_pool, "ServerName x\n", line, NULL), "t.conf:2: line too long (more than 8192 bytes)");
}

/* ---------------------------------------------------------------- step 2 */

static void test_resolve(void)
{
    RESOLVE(MODS "<Listen *:25>\nProtocol smtp\nSubmission off\nBanner hello\n</Listen>\n"
                 "Banner \"Global hello\"\nQueueDir q\n", NULL);
    RESOLVE("Frobnicate yes\n", "t.conf:1: unknown directive 'Frobnicate'");
    RESOLVE(MODS "<Listen *:25>\nProtocol smtp\nFrobnicate yes\n</Listen>\n",
            "t.conf:5: unknown directive 'Frobnicate'");
    RESOLVE(MODS "<Listen *:587>\nProtocol smtp\nSubmission maybe\n</Listen>\n",
            "t.conf:5: Submission: expected on or off");
    /* check() sees the value without its quotes */
    RESOLVE(MODS "<Listen *:587>\nProtocol smtp\nsubmission \"ON\"\n</Listen>\n", NULL);
    RESOLVE(MODS "Submission on\n", "t.conf:3: 'Submission' is only allowed inside <Listen>");
    RESOLVE(MODS "<Listen *:25>\nProtocol smtp\nQueueDir q\n</Listen>\n",
            "t.conf:5: 'QueueDir' is not allowed inside <Listen>");
    RESOLVE(MODS "LoadModule maildir mod_maildir.so\n<Listen *:25>\n\nProtocol maildir\n</Listen>\n",
            "t.conf:6: module 'maildir' is not a protocol handler");
    /* the first problem in file order, though globals are checked first */
    RESOLVE(MODS "<Listen *:25>\nProtocol smtp\nSubmission x\n</Listen>\nFrobnicate 1\n",
            "t.conf:5: Submission: expected on or off");
    RESOLVE(MODS "Frobnicate 1\n<Listen *:25>\nProtocol smtp\nSubmission x\n</Listen>\n",
            "t.conf:3: unknown directive 'Frobnicate'");

    /* a host without module directives */
    {
        mph_conf *c = OK("Banner x\n");
        mph_conf_modules none = {NULL, NULL, stub_is_protocol};
        const char *err = c ? mph_conf_resolve(c, &none) : NULL;
        STR_EQ(err, "t.conf:1: unknown directive 'Banner'");
    }
}

/* ---------------------------------------------------------------- real files */

static char g_tmp[64];

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(text, f);
    fclose(f);
}

static void test_files(void)
{
    char *cwd, *path = apr_pstrcat(g_pool, g_tmp, "/mp.conf", NULL);
    mph_conf *c = NULL;
    const char *err;

    write_file(path, "ModuleDir mods\r\nLoadModule smtp mod_smtp.so\r\nLoadModule maildir mod_maildir.so\r\n"
                     "<Listen [::1]:2525>\r\n  Protocol smtp\r\n  Submission on\r\n</Listen>\r\n");
    err = mph_conf_parse(g_pool, path, &c);
    CU_ASSERT_PTR_NULL(err);
    if (c) {
        STR_EQ(c->file, path);
        STR_EQ(c->dir, g_tmp);
        STR_EQ(c->module_dir, apr_pstrcat(g_pool, g_tmp, "/mods", NULL));
        STR_EQ(module(c, 0)->path, apr_pstrcat(g_pool, g_tmp, "/mods/mod_smtp.so", NULL));
        STR_EQ(c->state_dir, apr_pstrcat(g_pool, g_tmp, "/state", NULL));
        CU_ASSERT_EQUAL(listener(c, 0)->port, 2525);
        CU_ASSERT_PTR_NULL(mph_conf_resolve(c, &stub_mods));
    }

    /* a relative path: conf->file is absolute, messages use the path as given (step 1 and step 2) */
    CU_ASSERT_EQUAL_FATAL(apr_filepath_get(&cwd, 0, g_pool), APR_SUCCESS);
    CU_ASSERT_EQUAL_FATAL(apr_filepath_set(g_tmp, g_pool), APR_SUCCESS);
    c = NULL;
    CU_ASSERT_PTR_NULL(mph_conf_parse(g_pool, "./mp.conf", &c));
    if (c) {
        STR_EQ(c->file, path);
        STR_EQ(c->dir, g_tmp);
    }
    write_file(path, "LoadModule smtp mod_smtp.so\n<Listen *:25>\nProtocol smtp\nSubmission perhaps\n</Listen>\n");
    c = NULL;
    CU_ASSERT_PTR_NULL(mph_conf_parse(g_pool, "mp.conf", &c));
    if (c)
        STR_EQ(mph_conf_resolve(c, &stub_mods), "mp.conf:4: Submission: expected on or off");
    write_file(path, "ServerName x\n\nThreads lots\n");
    STR_EQ(mph_conf_parse(g_pool, "mp.conf", &c), "mp.conf:3: bad number 'lots' for Threads (expected a whole number >= 0)");
    CU_ASSERT_EQUAL(apr_filepath_set(cwd, g_pool), APR_SUCCESS);

    /* a NUL byte in the file */
    {
        FILE *f = fopen(path, "wb");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fwrite("User a\nUser b\0c\n", 1, 16, f);
        fclose(f);
        STR_EQ(mph_conf_parse(g_pool, path, &c), apr_pstrcat(g_pool, path, ":2: NUL byte in line", NULL));
    }

    /* a file larger than the first read buffer */
    {
        char *big = apr_palloc(g_pool, 200 * 100 + 100);
        char *p = big;
        for (int i = 0; i < 200; i++)
            p += sprintf(p, "Banner %090d\n", i);
        strcpy(p, "ServerName big.test\n");
        write_file(path, big);
        c = NULL;
        CU_ASSERT_PTR_NULL(mph_conf_parse(g_pool, path, &c));
        if (c) {
            STR_EQ(c->server_name, "big.test");
            CU_ASSERT_EQUAL(c->extra->nelts, 200);
            CU_ASSERT_EQUAL(extra(c->extra, 199)->line, 200);
        }
    }

    /* unreadable */
    STR_EQ(mph_conf_parse(g_pool, "/nonexistent/mp.conf", &c),
           "/nonexistent/mp.conf: cannot read: No such file or directory");
    STR_EQ(mph_conf_parse(g_pool, g_tmp, &c), apr_pstrcat(g_pool, g_tmp, ": cannot read: Is a directory", NULL));

    apr_file_remove(path, g_pool);
}

/* ---------------------------------------------------------------- value parsers */

static void test_parse_size(void)
{
    static const struct { const char *text; apr_off_t bytes; } good[] = {
        {"0", 0}, {"1", 1}, {"1000", 1000}, {"1k", 1024}, {"1K", 1024}, {"64K", 65536}, {"50M", 50 * MB},
        {"50m", 50 * MB}, {"2g", 2048 * MB}, {"9223372036854775807", APR_INT64_MAX},
        {"8589934591G", (apr_off_t)8589934591 * 1024 * MB}, {"007", 7},
    };
    static const char *const bad[] = {
        "", "-1", "+1", " 1", "1 ", "1.5M", "10MB", "k", "M", "1T", "1KK", "0x10",
        "9223372036854775808", "99999999999999999999999", "8589934592G", "9007199254740992K",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        apr_off_t v = -1;
        CU_ASSERT_EQUAL(mph_parse_size(good[i].text, &v), 0);
        CU_ASSERT_EQUAL(v, good[i].bytes);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        apr_off_t v = 12345;
        CU_ASSERT_EQUAL(mph_parse_size(bad[i], &v), -1);
        CU_ASSERT_EQUAL(v, 12345);   /* untouched on failure */
    }
    CU_ASSERT_EQUAL(mph_parse_size(NULL, &(apr_off_t){0}), -1);
}

static void test_parse_interval(void)
{
    static const struct { const char *text; apr_interval_time_t usec; } good[] = {
        {"0", 0}, {"300", SEC(300)}, {"300s", SEC(300)}, {"5m", SEC(300)}, {"1h", SEC(3600)},
        {"250ms", 250000}, {"1S", SEC(1)}, {"2H", SEC(7200)}, {"10MS", 10000}, {"0ms", 0},
        /* up to ten years: an interval is added to the current time */
        {"87600h", SEC(APR_INT64_C(315360000))}, {"315360000s", SEC(APR_INT64_C(315360000))},
        {"315360000000ms", SEC(APR_INT64_C(315360000))},
    };
    static const char *const bad[] = {
        "", "-1", "+1", "5x", "5 m", "1.5s", "ms", "s", "1msec", "1d", "5mm", " 5",
        "9223372036854775807", "9223372036855s", "9223372036854776ms", "2562047789h", "99999999999999999999999",
        "87601h", "315360001s", "315360000001ms", "2562047788h", "9223372036854s",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        apr_interval_time_t v = -1;
        CU_ASSERT_EQUAL(mph_parse_interval(good[i].text, &v), 0);
        CU_ASSERT_EQUAL(v, good[i].usec);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        apr_interval_time_t v = 12345;
        CU_ASSERT_EQUAL(mph_parse_interval(bad[i], &v), -1);
        CU_ASSERT_EQUAL(v, 12345);
    }
    CU_ASSERT_EQUAL(mph_parse_interval(NULL, &(apr_interval_time_t){0}), -1);
}

static void test_parse_tls_mode(void)
{
    static const struct { const char *text; mp_tls_mode mode; } good[] = {
        {"off", MP_TLS_OFF}, {"starttls", MP_TLS_STARTTLS}, {"required", MP_TLS_REQUIRED},
        {"implicit", MP_TLS_IMPLICIT}, {"OFF", MP_TLS_OFF}, {"StartTLS", MP_TLS_STARTTLS},
        {"Implicit", MP_TLS_IMPLICIT},
    };
    static const char *const bad[] = {"", "on", "yes", "tls", "off ", " off", "start", "implicitly"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        mp_tls_mode m = (mp_tls_mode)99;
        CU_ASSERT_EQUAL(mph_parse_tls_mode(good[i].text, &m), 0);
        CU_ASSERT_EQUAL(m, good[i].mode);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        mp_tls_mode m = (mp_tls_mode)99;
        CU_ASSERT_EQUAL(mph_parse_tls_mode(bad[i], &m), -1);
        CU_ASSERT_EQUAL(m, (mp_tls_mode)99);
    }
    CU_ASSERT_EQUAL(mph_parse_tls_mode(NULL, &(mp_tls_mode){MP_TLS_OFF}), -1);
}

/* ---------------------------------------------------------------- main */

int main(void)
{
    static const struct { const char *name; CU_TestFunc fn; } tests[] = {
        {"design example, every directive", test_design_example},
        {"defaults", test_defaults},
        {"addresses", test_addresses},
        {"duplicate address", test_duplicate_address},
        {"relative paths", test_paths},
        {"quotes and comments", test_quotes_and_comments},
        {"CRLF, BOM, last line", test_line_ends},
        {"case-insensitive names", test_case_insensitive},
        {"listener overrides and inheritance", test_listen_overrides},
        {"block errors", test_block_errors},
        {"Protocol and LoadModule errors", test_protocol_errors},
        {"TLS errors", test_tls_errors},
        {"bad values", test_value_errors},
        {"missing values", test_missing_values},
        {"scope errors", test_scope_errors},
        {"line too long", test_line_length},
        {"step 2: resolve", test_resolve},
        {"real files", test_files},
        {"mph_parse_size", test_parse_size},
        {"mph_parse_interval", test_parse_interval},
        {"mph_parse_tls_mode", test_parse_tls_mode},
    };
    CU_pSuite suite;
    unsigned failures;

    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&g_pool, NULL) != APR_SUCCESS)
        return 2;
    strcpy(g_tmp, "/tmp/test_config.XXXXXX");
    if (!mkdtemp(g_tmp))
        return 2;
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    suite = CU_add_suite("config", NULL, NULL);
    for (size_t i = 0; suite && i < sizeof(tests) / sizeof(tests[0]); i++)
        CU_add_test(suite, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures();
    CU_cleanup_registry();
    rmdir(g_tmp);
    apr_pool_destroy(g_pool);
    apr_terminate();
    return failures != 0 || CU_get_error();
}
