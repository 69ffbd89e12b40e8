/*
 * mailprotod: the command line (DESIGN section 5).
 *
 *   mailprotod -c FILE               run in the foreground, log to stderr
 *   mailprotod -c FILE -t            check the configuration
 *   mailprotod -c FILE -s reload|stop|status
 *   mailprotod --hash-password       read a password on stdin, print a {SHA512-CRYPT} entry
 *   mailprotod [--demo DIR]          write the embedded default configuration into DIR and run it
 */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_strings.h>

#include "demo.h"
#include "log.h"
#include "server.h"

static int usage(void)
{
    fputs("usage: mailprotod -c FILE [-t | -s reload|stop|status]\n"
          "       mailprotod --hash-password < password\n"
          "       mailprotod [--demo DIR]    run the embedded default configuration\n",
          stderr);
    return 2;
}

static int hash_password(void)
{
    char pw[1024];
    if (!fgets(pw, sizeof pw, stdin)) {
        fputs("mailprotod: no password on stdin\n", stderr);
        return 1;
    }
    pw[strcspn(pw, "\r\n")] = 0;
    const char *salt = crypt_gensalt_ra("$6$", 0, NULL, 0);
    struct crypt_data cd;
    memset(&cd, 0, sizeof cd);
    const char *h = salt ? crypt_r(pw, salt, &cd) : NULL;
    explicit_bzero(pw, sizeof pw);
    free((void *)salt);
    if (!h || h[0] == '*') {
        fputs("mailprotod: crypt failed\n", stderr);
        return 1;
    }
    printf("{SHA512-CRYPT}%s\n", h);
    return 0;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *signal_cmd = NULL, *demo_dir = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            conf = argv[++i];
        else if (strcmp(argv[i], "-t") == 0)
            check = 1;
        else if (strcmp(argv[i], "-s") == 0 && i + 1 < argc)
            signal_cmd = argv[++i];
        else if (strcmp(argv[i], "--demo") == 0 && i + 1 < argc)
            demo_dir = argv[++i];
        else if (strcmp(argv[i], "--hash-password") == 0)
            return hash_password();
        else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("mailprotod %s (module ABI %d.%d)\n", MAILPROTO_VERSION, MP_ABI_MAJOR, MP_ABI_MINOR);
            return 0;
        } else
            return usage();
    }
    if (signal_cmd && (check || !conf))
        return usage();
    if (signal_cmd && strcmp(signal_cmd, "reload") && strcmp(signal_cmd, "stop") && strcmp(signal_cmd, "status"))
        return usage();

    apr_initialize();
    atexit(apr_terminate);
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    int rc;
    if (signal_cmd) {
        rc = mph_control_client(pool, conf, signal_cmd);
    } else {
        if (!conf) {
            const char *err = mph_demo_prepare(pool, argv[0], demo_dir, &conf);
            if (err) {
                fprintf(stderr, "mailprotod: %s\n", err);
                return 1;
            }
        }
        mph_server *srv = mph_server_create(pool, conf);
        if (check) {
            mph_log_set_level(MP_LOG_WARN);
            const char *err = mph_server_check(srv);
            if (err)
                fprintf(stderr, "%s\n", err);
            else
                printf("%s: configuration OK\n", conf);
            rc = err ? 1 : 0;
        } else {
            rc = mph_server_run(srv);
        }
    }
    apr_pool_destroy(pool);
    return rc;
}
