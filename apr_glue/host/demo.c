#include "demo.h"

#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <apr_file_io.h>
#include <apr_strings.h>

#include "tls.h"

#define DEMO_DOMAIN "example.test"
#define DEMO_USER "alice@" DEMO_DOMAIN
#define DEMO_PASSWORD "wonderland"

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* Can `pw` reach `path`? Every folder on the way must let it through. */
static int reachable_by(const struct passwd *pw, const char *path, apr_pool_t *pool)
{
    char *p = apr_pstrdup(pool, path);
    for (char *slash = p; slash; slash = strchr(slash + 1, '/')) {
        char keep = slash[1];
        slash[1] = 0;
        struct stat st;
        int ok = stat(p, &st) == 0 &&
                 (st.st_uid == pw->pw_uid ? (st.st_mode & S_IXUSR)
                                          : st.st_gid == pw->pw_gid ? (st.st_mode & S_IXGRP) : (st.st_mode & S_IXOTH));
        slash[1] = keep;
        if (!ok)
            return 0;
    }
    return 1;
}

static const char *write_file(apr_pool_t *pool, const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        return apr_psprintf(pool, "%s: cannot write", path);
    return NULL;
}

const char *mph_demo_prepare(apr_pool_t *pool, const char *argv0, const char *dir, const char **conf_r)
{
    char *abs, *exe = apr_pstrdup(pool, argv0);
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        exe = apr_pstrdup(pool, self);
    }
    char *slash = strrchr(exe, '/');
    const char *module_dir = apr_pstrcat(pool, slash ? apr_pstrndup(pool, exe, (apr_size_t)(slash - exe)) : ".",
                                         "/modules", NULL);
    if (apr_filepath_merge(&abs, NULL, dir ? dir : "mailproto-demo", 0, pool) != APR_SUCCESS)
        return "cannot resolve the demo folder";
    if (apr_dir_make_recursive(apr_pstrcat(pool, abs, "/state", NULL), APR_FPROT_OS_DEFAULT, pool) != APR_SUCCESS ||
        apr_dir_make_recursive(apr_pstrcat(pool, abs, "/mail", NULL), APR_FPROT_OS_DEFAULT, pool) != APR_SUCCESS)
        return apr_psprintf(pool, "%s: cannot create the demo folder", abs);

    const char *cert = apr_pstrcat(pool, abs, "/cert.pem", NULL), *key = apr_pstrcat(pool, abs, "/key.pem", NULL);
    const char *err;
    if (!exists(cert) || !exists(key))
        if ((err = mph_tls_self_signed(pool, "mail." DEMO_DOMAIN, 365, cert, key)) != NULL)
            return err;
    const char *users = apr_pstrcat(pool, abs, "/users", NULL);
    if (!exists(users) && (err = write_file(pool, users, DEMO_USER ":{PLAIN}" DEMO_PASSWORD "\n")) != NULL)
        return err;

    int root = geteuid() == 0;
    int shift = root ? 0 : 10000; /* ports below 1024 need root */
    struct passwd *pw = root ? getpwnam("mail") : NULL;
    if (pw && !reachable_by(pw, abs, pool)) {
        fprintf(stderr, "mailprotod demo: user mail cannot reach %s (a folder on the way is closed to it): "
                        "the demo keeps running as root\n", abs);
        pw = NULL;
    }
    static const struct { const char *name; int port; const char *tls; int submission; } ports[] = {
        {"smtp", 25, "starttls", 0}, {"smtp", 2525, "starttls", 0}, {"smtp", 587, "required", 1},
        {"smtp", 465, "implicit", 1}, {"pop3", 110, "starttls", 0}, {"pop3", 995, "implicit", 0},
        {"imap", 143, "starttls", 0}, {"imap", 993, "implicit", 0},
    };
    static const char *const modules[] = {"smtp", "pop3", "imap", "maildir", "passwd", "echo"};

    char *text = apr_psprintf(pool,
                              "# Written by `mailprotod` (the embedded default configuration). Edit freely.\n"
                              "ServerName    mail." DEMO_DOMAIN "\n"
                              "ModuleDir     %s\n",
                              module_dir);
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++)
        if (exists(apr_psprintf(pool, "%s/mod_%s.so", module_dir, modules[i])))
            text = apr_psprintf(pool, "%sLoadModule    %-8s mod_%s.so\n", text, modules[i], modules[i]);
        else if (strcmp(modules[i], "echo") != 0)
            fprintf(stderr, "mailprotod demo: %s/mod_%s.so is not built: its ports stay closed\n", module_dir,
                    modules[i]);
    text = apr_psprintf(pool,
                        "%sStateDir      state\n"
                        "%s%s%s"
                        "LocalDomains  " DEMO_DOMAIN "\n"
                        "MailStore     maildir:mail/%%d/%%n\n"
                        "UserDB        passwd-file:users\n"
                        "TLSCertificateFile    cert.pem\n"
                        "TLSCertificateKeyFile key.pem\n"
                        "MaxMessageSize 50M\n",
                        text, pw ? "User          " : "", pw ? pw->pw_name : "", pw ? "\n" : "");
    for (size_t i = 0; i < sizeof ports / sizeof ports[0]; i++) {
        if (!exists(apr_psprintf(pool, "%s/mod_%s.so", module_dir, ports[i].name)))
            continue;
        /* Idle limits from the RFCs: SMTP 5 minutes (RFC 5321 4.5.3.2), POP3 10 (RFC 1939 3), IMAP 30
           (RFC 9051 5.4). */
        const char *idle = strcmp(ports[i].name, "pop3") == 0 ? "10m" : strcmp(ports[i].name, "imap") == 0 ? "30m" : "5m";
        text = apr_psprintf(pool, "%s\n<Listen 127.0.0.1:%d>\n    Protocol %s\n    TLS      %s\n    IdleTimeout %s\n%s</Listen>\n",
                            text, ports[i].port + shift, ports[i].name, ports[i].tls, idle,
                            ports[i].submission ? "    Submission on\n" : "");
    }
    if (exists(apr_psprintf(pool, "%s/mod_echo.so", module_dir)))
        text = apr_psprintf(pool,
                            "%s\n# The example handler: try `openssl s_client -connect 127.0.0.1:7778 -quiet`\n"
                            "<Listen 127.0.0.1:7777>\n    Protocol echo\n    TLS      starttls\n</Listen>\n"
                            "<Listen 127.0.0.1:7778>\n    Protocol echo\n    TLS      implicit\n</Listen>\n",
                            text);
    const char *conf = apr_pstrcat(pool, abs, "/mailprotod.conf", NULL);
    if ((err = write_file(pool, conf, text)) != NULL)
        return err;
    if (pw) {
        /* After binding the server runs as `mail`: it must read its key and write the mail folder. */
        const char *own[] = {key, cert, users, apr_pstrcat(pool, abs, "/mail", NULL)};
        for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
            if (chown(own[i], pw->pw_uid, pw->pw_gid) < 0)
                return apr_psprintf(pool, "%s: cannot give it to user mail", own[i]);
    }
    fprintf(stderr,
            "mailprotod demo: configuration %s\n"
            "mailprotod demo: user " DEMO_USER ", password " DEMO_PASSWORD "%s\n",
            conf, shift ? "; not root, so every port is shifted by 10000 (25 -> 10025)" : "");
    *conf_r = conf;
    return NULL;
}
