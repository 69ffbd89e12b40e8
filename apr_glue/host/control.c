/*
 * The control socket: a Unix socket in StateDir that `mailprotod -s reload|stop|status` talks to. One
 * request line, one answer: "ok" or "error" on the first line, the details after it. For `stop` the server
 * keeps the connection open until it exits, so the client returns when the server is gone.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <apr_file_io.h>
#include <apr_strings.h>

#include "log.h"
#include "server.h"

#define CONTROL_NAME "mailprotod.sock"

static int unix_addr(const char *path, struct sockaddr_un *sun)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path)
        return -1;
    strcpy(sun->sun_path, path);
    return 0;
}

int mph_control_listen(mph_server *srv, const char *state_dir, const char **err_r)
{
    struct sockaddr_un sun;
    const char *path = apr_pstrcat(srv->pool, state_dir, "/" CONTROL_NAME, NULL);
    if (unix_addr(path, &sun) < 0) {
        *err_r = apr_psprintf(srv->pool, "%s: path too long for a Unix socket", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    unlink(path); /* a leftover of a server that did not stop cleanly (the pid file check ran before) */
    mode_t old = umask(077);
    int r = fd >= 0 ? bind(fd, (struct sockaddr *)&sun, sizeof sun) : -1;
    umask(old);
    if (r < 0 || listen(fd, 16) < 0) {
        *err_r = apr_psprintf(srv->pool, "%s: cannot listen: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    srv->control_fd = fd;
    srv->control_path = path;
    return 0;
}

static void reply(int fd, const char *text)
{
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

void mph_control_serve(mph_server *srv)
{
    for (;;) {
        int fd = accept4(srv->control_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            return;
        /* Our own client sends its line at once; nobody holds the main thread (it also accepts every
           connection) longer than this, however slowly it sends. */
        char line[64];
        size_t len = 0;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        apr_time_t until = apr_time_now() + apr_time_from_msec(200);
        int wait_ms;
        while (len < sizeof line - 1 && (wait_ms = (int)apr_time_msec(until - apr_time_now())) > 0 &&
               poll(&pfd, 1, wait_ms) == 1) {
            ssize_t n = read(fd, line + len, sizeof line - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            if (memchr(line, '\n', len))
                break;
        }
        line[len] = 0;
        line[strcspn(line, "\r\n")] = 0;
        apr_pool_t *p;
        apr_pool_create(&p, srv->pool);
        if (strcmp(line, "status") == 0) {
            reply(fd, "ok\n");
            reply(fd, mph_status_json(srv, p));
        } else if (strcmp(line, "reload") == 0) {
            const char *err = mph_server_reload(srv, "over the control socket");
            if (err)
                reply(fd, apr_pstrcat(p, "error\n", err, "\n", NULL));
            else
                reply(fd, apr_psprintf(p, "ok\nreloaded: configuration %u\n", srv->current->number));
        } else if (strcmp(line, "stop") == 0) {
            reply(fd, "ok\nstopping\n");
            srv->stop_requested = 1;
            apr_pool_destroy(p);
            return; /* fd stays open until the process exits: the client waits for that */
        } else {
            reply(fd, "error\nunknown command\n");
        }
        apr_pool_destroy(p);
        close(fd);
    }
}

/* Finds StateDir without parsing the whole file: a file that a reload is about to refuse must still lead
   the client to the running server. */
static const char *find_state_dir(apr_pool_t *pool, const char *conf_file)
{
    char *abs;
    if (apr_filepath_merge(&abs, NULL, conf_file, APR_FILEPATH_TRUENAME, pool) != APR_SUCCESS)
        abs = apr_pstrdup(pool, conf_file);
    char *dir = apr_pstrdup(pool, abs);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    const char *state = "state";
    FILE *f = fopen(conf_file, "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        if (strncasecmp(p, "StateDir", 8) == 0 && (p[8] == ' ' || p[8] == '\t')) {
            p += 8 + strspn(p + 8, " \t");
            char *end;
            if (*p == '"' && (end = strchr(p + 1, '"')) != NULL) { /* quoted: '#' is part of the value */
                *end = 0;
                p++;
            } else {
                p[strcspn(p, "#\r\n")] = 0;
                size_t n = strlen(p);
                while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
                    p[--n] = 0;
            }
            state = apr_pstrdup(pool, p);
        }
    }
    if (f)
        fclose(f);
    char *merged;
    if (apr_filepath_merge(&merged, dir, state, 0, pool) != APR_SUCCESS)
        return state;
    return merged;
}

int mph_control_client(apr_pool_t *pool, const char *conf_file, const char *command)
{
    const char *path = apr_pstrcat(pool, find_state_dir(pool, conf_file), "/" CONTROL_NAME, NULL);
    struct sockaddr_un sun;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || unix_addr(path, &sun) < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        fprintf(stderr, "mailprotod: no server answers at %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    char *req = apr_pstrcat(pool, command, "\n", NULL);
    reply(fd, req);
    /* Read everything: for stop, the end comes when the server process is gone. */
    apr_size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = 0;
    int ok = strncmp(buf, "ok\n", 3) == 0;
    const char *body = strchr(buf, '\n') ? strchr(buf, '\n') + 1 : buf;
    fputs(body, ok ? stdout : stderr);
    if (!ok && len == 0)
        fprintf(stderr, "mailprotod: the server closed the control connection without an answer\n");
    free(buf);
    return ok ? 0 : 1;
}
