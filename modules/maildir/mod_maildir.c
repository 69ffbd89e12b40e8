/*
 * mod_maildir: the Maildir++ store provider (include/mailproto/store.h; DESIGN section 4).
 *
 *   LoadModule maildir mod_maildir.so
 *   MailStore  maildir:mail/%d/%n      # %d domain, %n local part, %u whole user, %% a "%"
 *
 * This file: the module descriptor, instances, users and logging. Messages 60000-60099. The rest:
 * maildir_names.c (names and paths), maildir_fs.c (durable file operations), maildir_index.c and
 * maildir_sync.c (UIDs), maildir_folder.c (views), maildir_save.c (delivery), maildir_list.c (the folder
 * tree, quota), maildir_watch.c (inotify).
 */
#include "maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>

const mp_host *md_host;

void md_log(mp_log_level level, int msgid, const char *fmt, ...)
{
    const mp_host *h = md_host;
    if (!h || !h->log)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    h->log(NULL, level, msgid, "maildir: %s", msg);
}

static int md_instance(const char *spec, const char *base_dir, apr_pool_t *pool, void **store_r,
                       const char **err_r)
{
    if (!spec || !*spec) {
        *err_r = "maildir: empty path pattern";
        return MP_STORE_ERR;
    }
    for (const char *p = strchr(spec, '%'); p; p = strchr(p + 2, '%'))
        if (!p[1] || !strchr("dnu%", p[1])) {
            *err_r = apr_psprintf(pool, "maildir: unknown %%-escape in \"%s\" (use %%d %%n %%u %%%%)", spec);
            return MP_STORE_ERR;
        }
    char cwd[PATH_MAX];
    if (spec[0] != '/' && !base_dir)
        base_dir = getcwd(cwd, sizeof cwd) ? cwd : ".";
    char *path = spec[0] == '/' ? apr_pstrdup(pool, spec) : apr_pstrcat(pool, base_dir, "/", spec, NULL);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/')
        path[--len] = '\0';
    mp_store *st = apr_pcalloc(pool, sizeof *st);
    pthread_mutex_init(&st->real_base_mu, NULL);
    st->pattern = path;
    /* The base: the directories before the first component with a "%". Users live below it only. */
    const char *pct = strchr(path, '%');
    if (pct) {
        const char *slash = pct;
        while (slash > path && *slash != '/')
            slash--;
        st->base = slash > path ? apr_pstrmemdup(pool, path, (size_t)(slash - path)) : "/";
    } else {
        st->base = path;
    }
    *store_r = st;
    return MP_STORE_OK;
}

static int inside(const char *base, const char *path)
{
    size_t n = strlen(base);
    if (strcmp(base, "/") == 0)
        return 1;
    return strncmp(path, base, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* realpath(st->base), once per instance. NULL (logged) when it cannot be found. */
static const char *real_base(mp_store *st)
{
    if (atomic_load_explicit(&st->real_base_ok, memory_order_acquire))
        return st->real_base;
    pthread_mutex_lock(&st->real_base_mu);
    if (!atomic_load_explicit(&st->real_base_ok, memory_order_relaxed)) {
        if (realpath(st->base, st->real_base))
            atomic_store_explicit(&st->real_base_ok, 1, memory_order_release);
        else
            md_log(MP_LOG_ERROR, 60001, "realpath(%s) failed: %s", st->base, strerror(errno));
    }
    pthread_mutex_unlock(&st->real_base_mu);
    return atomic_load_explicit(&st->real_base_ok, memory_order_acquire) ? st->real_base : NULL;
}

/* The real path of the user's maildir `path`, which must be a maildir (cur/; with `all`, new/ and tmp/
   too) inside the store. Opens it once and asks the kernel for its name (whatever symbolic links lie on
   the way), where realpath() would read every component's link: this runs for every recipient. */
static int user_root(mp_store *st, const char *path, int all, char *real_root)
{
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return MP_STORE_NOTFOUND;
        md_log(MP_LOG_ERROR, 60000, "open(%s) failed: %s", path, strerror(errno));
        return MP_STORE_ERR;
    }
    int rv = MP_STORE_OK;
    ssize_t n = -1;
    if (md_proc_fd_ok()) {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        n = readlink(link, real_root, PATH_MAX - 1);
        if (n > 0 && n < PATH_MAX - 1 && real_root[0] == '/')
            real_root[n] = '\0';
        else
            n = -1;
    }
    if (n < 0 && !realpath(path, real_root)) {
        rv = errno == ENOENT || errno == ENOTDIR ? MP_STORE_NOTFOUND : MP_STORE_ERR;
        if (rv == MP_STORE_ERR)
            md_log(MP_LOG_ERROR, 60000, "realpath(%s) failed: %s", path, strerror(errno));
    }
    const char *base = rv == MP_STORE_OK ? real_base(st) : NULL;
    if (rv == MP_STORE_OK && !base)
        rv = MP_STORE_ERR;
    if (rv == MP_STORE_OK && !inside(base, real_root)) {
        md_log(MP_LOG_ERROR, 60002, "%s leads outside the store %s: refused", path, base);
        rv = MP_STORE_BADNAME;
    }
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (size_t i = 0; rv == MP_STORE_OK && i < (all ? 3u : 1u); i++) {
        struct stat sb;
        if (fstatat(fd, subs[i], &sb, 0) != 0 || !S_ISDIR(sb.st_mode))
            rv = MP_STORE_NOTFOUND;
    }
    close(fd);
    return rv;
}

int md_user_open(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u_r)
{
    apr_pool_t *up;
    const char *path;
    if (apr_pool_create(&up, pool) != APR_SUCCESS)
        return MP_STORE_ERR;
    int rv = md_user_path(st, user, up, &path);
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(up);
        return rv;
    }
    char real_root[PATH_MAX];
    /* Usually the maildir is there: no mkdir at all. With `create`, new/ and tmp/ must be there too. */
    rv = user_root(st, path, create, real_root);
    if (rv == MP_STORE_NOTFOUND && create) {
        size_t blen = strlen(st->base);
        const char *rel = strcmp(st->base, "/") == 0 ? path + 1 : path + blen + (path[blen] == '/');
        rv = md_mkdir_beneath(st->base, rel) != 0 || md_make_maildir(path, 0) != 0 ? MP_STORE_ERR
                                                                                  : user_root(st, path, 1, real_root);
    }
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(up);
        return rv;
    }
    mp_store_user *u = apr_pcalloc(up, sizeof *u);
    u->store = st;
    u->pool = up;
    u->name = apr_pstrdup(up, user);
    u->root = apr_pstrdup(up, real_root);
    *u_r = u;
    return MP_STORE_OK;
}

void md_user_close(mp_store_user *u)
{
    if (u)
        apr_pool_destroy(u->pool);
}

static void md_set_quota_limits(mp_store_user *u, uint64_t bytes_limit, uint64_t messages_limit)
{
    u->bytes_limit = bytes_limit;
    u->messages_limit = messages_limit;
}

static const mp_store_iface maildir_iface = {
    .instance = md_instance,
    .user_open = md_user_open,
    .user_close = md_user_close,
    .quota = md_quota,
    .set_quota_limits = md_set_quota_limits,
    .list = md_list,
    .create = md_create,
    .remove = md_remove,
    .rename = md_rename,
    .subscribe = md_subscribe,
    .folder_open = md_folder_open,
    .folder_close = md_folder_close,
    .folder_status = md_folder_status,
    .folder_messages = md_folder_messages,
    .folder_sync = md_folder_sync,
    .folder_watch = md_folder_watch,
    .folder_lock = md_folder_lock,
    .folder_peek = md_folder_peek,
    .message_open = md_message_open,
    .stream_read = md_stream_read,
    .stream_close = md_stream_close,
    .store_flags = md_store_flags,
    .expunge = md_expunge,
    .copy = md_copy,
    .save_begin = md_save_begin,
    .save_write = md_save_write,
    .save_commit = md_save_commit,
    .save_abort = md_save_abort,
};

static const mp_provider maildir_provider = {
    .kind = "store",
    .name = "maildir",
    .iface_version = MP_STORE_IFACE_VERSION,
    .iface = &maildir_iface,
};

static int maildir_init(const mp_host *host, apr_pool_t *pool, void **ctx_r)
{
    (void)pool;
    md_host = host;
    *ctx_r = NULL;
    return 0;
}

static void maildir_fini(void *ctx)
{
    (void)ctx;
    md_watch_shutdown(); /* the watcher thread must not outlive the code it runs */
    unsigned long syncs, callers;
    md_dirsync_stats(&syncs, &callers);
    if (callers)
        md_log(MP_LOG_INFO, 60003, "group commit: %lu folder fsyncs served %lu commits", syncs, callers);
}

MP_MODULE {
    MP_MODULE_HEADER,
    .name = "maildir",
    .kind = MP_KIND_PROVIDER,
    .version = "1.0",
    .description = "Maildir++ mail store (Dovecot-compatible)",
    .init = maildir_init,
    .fini = maildir_fini,
    .provider = &maildir_provider,
};
