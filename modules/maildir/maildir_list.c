/*
 * The folder tree: LIST (RFC 3501, RFC 3348 children, RFC 6154 SPECIAL-USE), CREATE, DELETE, RENAME,
 * SUBSCRIBE, and the quota count. Messages 60600-60699.
 *
 * Folders are the ".Name" directories of the user root (Maildir++). `subscriptions` is Dovecot's file:
 * one Maildir++ name per line ("Work.Projects"), or, after a "V\t2\n\n" header, the levels separated by
 * TABs; we keep whichever format the file has. Structure changes (subscriptions, special-use) take the
 * user's meta lock.
 */
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_hash.h>
#include <apr_strings.h>

#define SPECIAL_MASK (MP_FOLDER_SENT | MP_FOLDER_DRAFTS | MP_FOLDER_TRASH | MP_FOLDER_JUNK | MP_FOLDER_ARCHIVE)

/* The Maildir++ names (without the leading ".") of every folder directory. */
static int folder_disks(const mp_store_user *u, apr_pool_t *pool, apr_array_header_t **out)
{
    *out = apr_array_make(pool, 16, sizeof(const char *));
    DIR *d = opendir(u->root);
    if (!d) {
        md_log(MP_LOG_ERROR, 60600, "opendir(%s) failed: %s", u->root, strerror(errno));
        return MP_STORE_ERR;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        struct stat st;
        /* ".." prefixed: a folder being deleted (never a valid name). */
        if (n[0] != '.' || n[1] == '\0' || n[1] == '.' || strlen(n) > MD_NAME_MAX)
            continue;
        if (de->d_type != DT_DIR &&
            (de->d_type != DT_UNKNOWN || fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)))
            continue;
        APR_ARRAY_PUSH(*out, const char *) = apr_pstrdup(pool, n + 1);
    }
    closedir(d);
    return MP_STORE_OK;
}

static int meta_lock(const mp_store_user *u)
{
    int fd = md_lock_open(u->root, MD_META_LOCK);
    if (fd >= 0 && md_lock(fd) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void meta_unlock(int fd)
{
    md_unlock(fd);
    close(fd);
}

/* ---- special-use: "<bits> <Maildir++ name>" per line ---- */

static apr_hash_t *special_read(const mp_store_user *u, apr_pool_t *pool)
{
    apr_hash_t *h = apr_hash_make(pool);
    char *data;
    size_t len;
    if (md_read_file(apr_pstrcat(pool, u->root, "/", MD_SPECIAL_USE, NULL), pool, &data, &len) != 0)
        return h;
    for (char *save = NULL, *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *end;
        unsigned long bits = strtoul(line, &end, 10);
        if (end != line && *end == ' ' && end[1] && (bits & SPECIAL_MASK)) {
            uint32_t *v = apr_palloc(pool, sizeof *v);
            *v = (uint32_t)bits & SPECIAL_MASK;
            apr_hash_set(h, end + 1, APR_HASH_KEY_STRING, v);
        }
    }
    return h;
}

static int special_write(const mp_store_user *u, apr_hash_t *h, apr_pool_t *pool)
{
    char *text = "";
    for (apr_hash_index_t *hi = apr_hash_first(pool, h); hi; hi = apr_hash_next(hi)) {
        const void *key;
        void *val;
        apr_hash_this(hi, &key, NULL, &val);
        text = apr_psprintf(pool, "%s%u %s\n", text, *(uint32_t *)val, (const char *)key);
    }
    return md_write_atomic(u->root, MD_SPECIAL_USE, text, strlen(text)) == 0 ? MP_STORE_OK : MP_STORE_ERR;
}

/* Moves (to != NULL) or drops the entries of `from` and of its children. */
static int special_move(const mp_store_user *u, const char *from, const char *to, apr_pool_t *pool)
{
    int fd = meta_lock(u);
    if (fd < 0)
        return MP_STORE_ERR;
    apr_hash_t *h = special_read(u, pool), *out = apr_hash_make(pool);
    size_t flen = strlen(from);
    int changed = 0;
    for (apr_hash_index_t *hi = apr_hash_first(pool, h); hi; hi = apr_hash_next(hi)) {
        const void *key;
        void *val;
        apr_hash_this(hi, &key, NULL, &val);
        const char *k = key;
        if (strncmp(k, from, flen) == 0 && (k[flen] == '\0' || k[flen] == '.')) {
            changed = 1;
            if (!to)
                continue;
            k = apr_pstrcat(pool, to, k + flen, NULL);
        }
        apr_hash_set(out, k, APR_HASH_KEY_STRING, val);
    }
    int rv = changed ? special_write(u, out, pool) : MP_STORE_OK;
    meta_unlock(fd);
    return rv;
}

/* ---- subscriptions ---- */

static const char v2_header[] = "V\t2\n\n";

/* The lines of the file as Maildir++ names; *v2_r: the file has Dovecot's version 2 format. */
static apr_array_header_t *subs_read(const mp_store_user *u, apr_pool_t *pool, int *v2_r)
{
    apr_array_header_t *a = apr_array_make(pool, 16, sizeof(const char *));
    char *data;
    size_t len;
    *v2_r = 0;
    if (md_read_file(apr_pstrcat(pool, u->root, "/", MD_SUBSCRIPTIONS, NULL), pool, &data, &len) != 0)
        return a;
    if (len >= sizeof v2_header - 1 && memcmp(data, v2_header, sizeof v2_header - 1) == 0) {
        *v2_r = 1;
        data += sizeof v2_header - 1;
    }
    for (char *save = NULL, *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (*v2_r)
            for (char *p = line; *p; p++)
                if (*p == '\t')
                    *p = '.';
        APR_ARRAY_PUSH(a, const char *) = line;
    }
    return a;
}

static int subs_write(const mp_store_user *u, apr_array_header_t *a, int v2, apr_pool_t *pool)
{
    char *text = v2 ? apr_pstrdup(pool, v2_header) : "";
    for (int i = 0; i < a->nelts; i++) {
        char *line = apr_pstrdup(pool, APR_ARRAY_IDX(a, i, const char *));
        if (v2)
            for (char *p = line; *p; p++)
                if (*p == '.')
                    *p = '\t';
        text = apr_pstrcat(pool, text, line, "\n", NULL);
    }
    return md_write_atomic(u->root, MD_SUBSCRIPTIONS, text, strlen(text)) == 0 ? MP_STORE_OK : MP_STORE_ERR;
}

int md_subscribe(mp_store_user *u, const char *name, int on)
{
    apr_pool_t *pool;
    const char *dir, *disk;
    apr_pool_create(&pool, u->pool);
    int rv = md_folder_resolve(u, name, pool, &dir, &disk);
    int fd = rv == MP_STORE_OK ? meta_lock(u) : -1;
    if (rv == MP_STORE_OK && fd < 0)
        rv = MP_STORE_ERR;
    if (rv == MP_STORE_OK) {
        int v2, found = 0;
        apr_array_header_t *a = subs_read(u, pool, &v2), *out = apr_array_make(pool, a->nelts + 1, sizeof(char *));
        for (int i = 0; i < a->nelts; i++) {
            const char *s = APR_ARRAY_IDX(a, i, const char *);
            if (strcmp(s, disk) == 0) {
                found = 1;
                if (!on)
                    continue;
            }
            APR_ARRAY_PUSH(out, const char *) = s;
        }
        if (on && !found)
            APR_ARRAY_PUSH(out, const char *) = disk;
        if (on != found)
            rv = subs_write(u, out, v2, pool);
        meta_unlock(fd);
    }
    apr_pool_destroy(pool);
    return rv;
}

static void subs_rename(const mp_store_user *u, const char *from, const char *to, apr_pool_t *pool)
{
    int fd = meta_lock(u), v2, changed = 0;
    if (fd < 0)
        return;
    apr_array_header_t *a = subs_read(u, pool, &v2);
    size_t flen = strlen(from);
    for (int i = 0; i < a->nelts; i++) {
        const char *s = APR_ARRAY_IDX(a, i, const char *);
        if (strncmp(s, from, flen) == 0 && (s[flen] == '\0' || s[flen] == '.')) {
            APR_ARRAY_IDX(a, i, const char *) = apr_pstrcat(pool, to, s + flen, NULL);
            changed = 1;
        }
    }
    if (changed)
        subs_write(u, a, v2, pool);
    meta_unlock(fd);
}

/* ---- LIST ---- */

static int entry_cmp(const void *a, const void *b)
{
    const mp_folder_entry *x = a, *y = b;
    int xi = strcmp(x->name, "INBOX") == 0, yi = strcmp(y->name, "INBOX") == 0;
    if (xi != yi)
        return yi - xi;
    return strcmp(x->name, y->name);
}

static uint32_t default_special(const char *name)
{
    /* RFC 6154: the usual names get their attribute without being created with it. */
    static const struct {
        const char *name;
        uint32_t attr;
    } known[] = {{"Sent", MP_FOLDER_SENT},   {"Drafts", MP_FOLDER_DRAFTS},   {"Trash", MP_FOLDER_TRASH},
                 {"Junk", MP_FOLDER_JUNK},   {"Archive", MP_FOLDER_ARCHIVE}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcasecmp(name, known[i].name) == 0)
            return known[i].attr;
    return 0;
}

int md_list(mp_store_user *u, apr_pool_t *pool, apr_array_header_t **entries_r)
{
    apr_array_header_t *disks;
    apr_pool_t *tmp;
    apr_pool_create(&tmp, pool);
    int rv = folder_disks(u, tmp, &disks);
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(tmp);
        return rv;
    }
    apr_hash_t *attrs = apr_hash_make(tmp), *by_disk = apr_hash_make(tmp);
    apr_hash_t *special = special_read(u, tmp);
    uint32_t *inbox = apr_pcalloc(tmp, sizeof *inbox);
    apr_hash_set(attrs, "INBOX", APR_HASH_KEY_STRING, inbox);
    for (int i = 0; i < disks->nelts; i++) {
        const char *disk = APR_ARRAY_IDX(disks, i, const char *);
        const char *name = md_folder_from_disk(disk, tmp);
        if (!name || strcmp(name, "INBOX") == 0)
            continue;
        uint32_t *a = apr_pcalloc(tmp, sizeof *a);
        uint32_t *sp = apr_hash_get(special, disk, APR_HASH_KEY_STRING);
        *a = (sp ? *sp : 0) | (strchr(name, '/') ? 0 : default_special(name));
        apr_hash_set(attrs, name, APR_HASH_KEY_STRING, a);
        apr_hash_set(by_disk, disk, APR_HASH_KEY_STRING, a);
    }
    /* Parents that are only a level of a deeper name: \Noselect (Maildir++ has no directory for them). */
    for (apr_hash_index_t *hi = apr_hash_first(tmp, attrs); hi; hi = apr_hash_next(hi)) {
        const void *key;
        apr_hash_this(hi, &key, NULL, NULL);
        for (const char *slash = strchr(key, '/'); slash; slash = strchr(slash + 1, '/')) {
            const char *parent = apr_pstrmemdup(tmp, key, (size_t)(slash - (const char *)key));
            if (!apr_hash_get(attrs, parent, APR_HASH_KEY_STRING)) {
                uint32_t *a = apr_pcalloc(tmp, sizeof *a);
                *a = MP_FOLDER_NOSELECT;
                apr_hash_set(attrs, parent, APR_HASH_KEY_STRING, a);
            }
        }
    }
    for (apr_hash_index_t *hi = apr_hash_first(tmp, attrs); hi; hi = apr_hash_next(hi)) {
        const void *key;
        apr_hash_this(hi, &key, NULL, NULL);
        const char *slash = strrchr(key, '/');
        if (slash) {
            uint32_t *pa = apr_hash_get(attrs, key, (apr_ssize_t)(slash - (const char *)key));
            if (pa)
                *pa |= MP_FOLDER_HASCHILDREN;
        }
    }
    int v2;
    apr_array_header_t *subs = subs_read(u, tmp, &v2);
    for (int i = 0; i < subs->nelts; i++) {
        const char *s = APR_ARRAY_IDX(subs, i, const char *);
        uint32_t *a = strcasecmp(s, "INBOX") == 0 ? inbox : apr_hash_get(by_disk, s, APR_HASH_KEY_STRING);
        if (a)
            *a |= MP_FOLDER_SUBSCRIBED;
    }
    apr_array_header_t *out = apr_array_make(pool, (int)apr_hash_count(attrs), sizeof(mp_folder_entry));
    for (apr_hash_index_t *hi = apr_hash_first(tmp, attrs); hi; hi = apr_hash_next(hi)) {
        const void *key;
        void *val;
        apr_hash_this(hi, &key, NULL, &val);
        uint32_t a = *(uint32_t *)val;
        if (!(a & MP_FOLDER_HASCHILDREN))
            a |= MP_FOLDER_HASNOCHILDREN;
        APR_ARRAY_PUSH(out, mp_folder_entry) = (mp_folder_entry){apr_pstrdup(pool, key), a};
    }
    qsort(out->elts, (size_t)out->nelts, sizeof(mp_folder_entry), entry_cmp);
    apr_pool_destroy(tmp);
    *entries_r = out;
    return MP_STORE_OK;
}

/* ---- CREATE, DELETE, RENAME ---- */

static int dir_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int md_create(mp_store_user *u, const char *name, uint32_t special_use)
{
    apr_pool_t *pool;
    const char *dir, *disk;
    apr_pool_create(&pool, u->pool);
    int rv = md_folder_resolve(u, name, pool, &dir, &disk);
    if (rv == MP_STORE_OK && (strcmp(disk, "INBOX") == 0 || dir_exists(dir)))
        rv = MP_STORE_EXISTS;
    if (rv == MP_STORE_OK && mkdir(dir, 0700) != 0) {
        if (errno == EEXIST) {
            rv = MP_STORE_EXISTS;
        } else {
            md_log(MP_LOG_ERROR, 60601, "mkdir(%s) failed: %s", dir, strerror(errno));
            rv = MP_STORE_ERR;
        }
    }
    if (rv == MP_STORE_OK && (md_make_maildir(dir, 1) != 0 || md_fsync_dir(u->root) != 0)) {
        md_remove_tree(dir);
        rv = MP_STORE_ERR;
    }
    if (rv == MP_STORE_OK && (special_use & SPECIAL_MASK)) {
        int fd = meta_lock(u);
        if (fd < 0) {
            rv = MP_STORE_ERR;
        } else {
            apr_hash_t *h = special_read(u, pool);
            uint32_t *v = apr_palloc(pool, sizeof *v);
            *v = special_use & SPECIAL_MASK;
            apr_hash_set(h, disk, APR_HASH_KEY_STRING, v);
            rv = special_write(u, h, pool);
            meta_unlock(fd);
        }
    }
    apr_pool_destroy(pool);
    return rv;
}

/* Folders below `disk` ("Work" -> "Work.Projects", ...). */
static apr_array_header_t *children(const mp_store_user *u, const char *disk, apr_pool_t *pool, int *err_r)
{
    apr_array_header_t *all, *out = apr_array_make(pool, 4, sizeof(const char *));
    *err_r = folder_disks(u, pool, &all);
    size_t len = strlen(disk);
    for (int i = 0; *err_r == MP_STORE_OK && i < all->nelts; i++) {
        const char *d = APR_ARRAY_IDX(all, i, const char *);
        if (strncmp(d, disk, len) == 0 && d[len] == '.')
            APR_ARRAY_PUSH(out, const char *) = d;
    }
    return out;
}

int md_remove(mp_store_user *u, const char *name)
{
    apr_pool_t *pool;
    const char *dir, *disk;
    int err;
    apr_pool_create(&pool, u->pool);
    int rv = md_folder_resolve(u, name, pool, &dir, &disk);
    if (rv == MP_STORE_OK && strcmp(disk, "INBOX") == 0)
        rv = MP_STORE_BADNAME; /* RFC 3501 section 6.3.4: deleting INBOX is an error */
    if (rv == MP_STORE_OK && (children(u, disk, pool, &err)->nelts > 0 || err != MP_STORE_OK))
        rv = err != MP_STORE_OK ? err : MP_STORE_NOTEMPTY;
    if (rv == MP_STORE_OK && !dir_exists(dir))
        rv = MP_STORE_NOTFOUND;
    if (rv == MP_STORE_OK) {
        /* Out of the name space in one step, then removed at leisure: nobody sees half a folder. */
        const char *trash = apr_pstrcat(pool, u->root, "/", MD_TRASH_PREFIX, md_unique_base(pool), NULL);
        if (rename(dir, trash) != 0) {
            md_log(MP_LOG_ERROR, 60602, "rename(%s, %s) failed: %s", dir, trash, strerror(errno));
            rv = errno == ENOENT ? MP_STORE_NOTFOUND : MP_STORE_ERR;
        } else {
            md_fsync_dir(u->root);
            md_remove_tree(trash);
            special_move(u, disk, NULL, pool);
        }
    }
    apr_pool_destroy(pool);
    return rv;
}

static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    if (dir_exists(to)) { /* a file system without RENAME_NOREPLACE */
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* RFC 3501 section 6.3.5: renaming INBOX moves its messages into a new folder and leaves INBOX empty. */
static int rename_inbox(mp_store_user *u, const char *to_dir, apr_pool_t *pool)
{
    if (mkdir(to_dir, 0700) != 0) {
        if (errno == EEXIST)
            return MP_STORE_EXISTS;
        md_log(MP_LOG_ERROR, 60603, "mkdir(%s) failed: %s", to_dir, strerror(errno));
        return MP_STORE_ERR;
    }
    if (md_make_maildir(to_dir, 1) != 0) {
        md_remove_tree(to_dir);
        return MP_STORE_ERR;
    }
    int fd = md_lock_open(u->root, MD_INDEX_LOCK), tfd = md_lock_open(to_dir, MD_INDEX_LOCK);
    int rv = fd >= 0 && tfd >= 0 && md_lock(fd) == 0 && md_lock(tfd) == 0 ? MP_STORE_OK : MP_STORE_ERR;
    md_index *ix = apr_palloc(pool, sizeof *ix), *nx = apr_palloc(pool, sizeof *nx);
    md_index_init(ix, pool);
    md_index_init(nx, pool);
    if (rv == MP_STORE_OK)
        rv = md_sync_locked(ix, u->root, u->root, 0, NULL);
    if (rv == MP_STORE_OK) {
        md_index_create(nx, md_new_uidvalidity(u->root, 0)); /* a new folder: UIDs from 1 */
        char from[4096], dst[4096];
        for (uint32_t i = 0; i < ix->n; i++) {
            md_rec *r = &ix->recs[i];
            const char *sub = r->in_new ? "new" : "cur";
            snprintf(from, sizeof from, "%s/%s/%s%s", u->root, sub, r->base, r->suffix);
            snprintf(dst, sizeof dst, "%s/%s/%s%s", to_dir, sub, r->base, r->suffix);
            if (rename(from, dst) != 0) {
                md_log(MP_LOG_ERROR, 60604, "rename(%s, %s) failed: %s", from, dst, strerror(errno));
                continue; /* stays in INBOX */
            }
            md_index_add(nx, r->base, r->base_len, r->suffix, r->in_new, r->size, r->date);
            md_index_expunge(ix, r);
        }
        snprintf(from, sizeof from, "%s/%s", u->root, MD_KEYWORDS_FILE);
        snprintf(dst, sizeof dst, "%s/%s", to_dir, MD_KEYWORDS_FILE);
        if (md_copy_file(from, dst) != 0 && errno != ENOENT)
            md_log(MP_LOG_ERROR, 60605, "copying %s failed: %s", from, strerror(errno));
        char dirs[2][4096];
        snprintf(dirs[0], sizeof dirs[0], "%s/cur", to_dir);
        snprintf(dirs[1], sizeof dirs[1], "%s/new", to_dir);
        if (md_fsync_dir(dirs[0]) != 0 || md_fsync_dir(dirs[1]) != 0 || md_index_save(nx, to_dir) != MP_STORE_OK)
            rv = MP_STORE_ERR;
        if (md_index_save(ix, u->root) != MP_STORE_OK) /* INBOX keeps its UIDVALIDITY and UIDNEXT */
            rv = MP_STORE_ERR;
    }
    if (fd >= 0)
        close(fd);
    if (tfd >= 0)
        close(tfd);
    md_fsync_dir(u->root);
    return rv;
}

int md_rename(mp_store_user *u, const char *from, const char *to)
{
    apr_pool_t *pool;
    const char *fdir, *fdisk, *tdir, *tdisk;
    int err;
    apr_pool_create(&pool, u->pool);
    int rv = md_folder_resolve(u, from, pool, &fdir, &fdisk);
    if (rv == MP_STORE_OK)
        rv = md_folder_resolve(u, to, pool, &tdir, &tdisk);
    if (rv == MP_STORE_OK && (strcmp(tdisk, "INBOX") == 0 || strcmp(fdisk, tdisk) == 0 || dir_exists(tdir)))
        rv = MP_STORE_EXISTS;
    if (rv == MP_STORE_OK && strcmp(fdisk, "INBOX") == 0) {
        rv = rename_inbox(u, tdir, pool);
        apr_pool_destroy(pool);
        return rv;
    }
    size_t flen = strlen(fdisk);
    if (rv == MP_STORE_OK && strncmp(tdisk, fdisk, flen) == 0 && tdisk[flen] == '.')
        rv = MP_STORE_BADNAME; /* into itself */
    apr_array_header_t *moving = apr_array_make(pool, 4, sizeof(const char *));
    if (rv == MP_STORE_OK) {
        if (dir_exists(fdir))
            APR_ARRAY_PUSH(moving, const char *) = fdisk;
        apr_array_cat(moving, children(u, fdisk, pool, &err));
        if (err != MP_STORE_OK)
            rv = err;
        else if (moving->nelts == 0)
            rv = MP_STORE_NOTFOUND;
    }
    /* Every new name must be free and short enough before anything moves. */
    const char **dst = apr_pcalloc(pool, (size_t)(moving->nelts + 1) * sizeof *dst);
    for (int i = 0; rv == MP_STORE_OK && i < moving->nelts; i++) {
        const char *d = APR_ARRAY_IDX(moving, i, const char *);
        const char *nd = apr_pstrcat(pool, tdisk, d + flen, NULL);
        if (strlen(nd) + 1 > MD_NAME_MAX)
            rv = MP_STORE_BADNAME;
        else if (dir_exists(md_disk_dir(u, nd, pool)))
            rv = MP_STORE_EXISTS;
        dst[i] = nd;
    }
    int done = 0;
    for (; rv == MP_STORE_OK && done < moving->nelts; done++) {
        const char *a = md_disk_dir(u, APR_ARRAY_IDX(moving, done, const char *), pool);
        const char *b = md_disk_dir(u, dst[done], pool);
        if (rename_noreplace(a, b) != 0) {
            md_log(MP_LOG_ERROR, 60606, "rename(%s, %s) failed: %s", a, b, strerror(errno));
            rv = errno == EEXIST ? MP_STORE_EXISTS : MP_STORE_ERR;
            while (done-- > 0) /* put back what moved */
                rename(md_disk_dir(u, dst[done], pool), md_disk_dir(u, APR_ARRAY_IDX(moving, done, const char *), pool));
            break;
        }
    }
    if (rv == MP_STORE_OK) {
        md_fsync_dir(u->root);
        subs_rename(u, fdisk, tdisk, pool);
        special_move(u, fdisk, tdisk, pool);
    }
    apr_pool_destroy(pool);
    return rv;
}

/* ---- quota ---- */

static void folder_usage(const char *dir, apr_pool_t *pool, uint64_t *bytes, uint64_t *msgs)
{
    md_index *ix = apr_palloc(pool, sizeof *ix);
    md_index_init(ix, pool);
    md_index_load(ix, dir, NULL); /* without the lock: a size is a size */
    char path[4096];
    for (int in_new = 0; in_new < 2; in_new++) {
        snprintf(path, sizeof path, "%s/%s", dir, in_new ? "new" : "cur");
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            const char *n = de->d_name;
            if (n[0] == '.' || (de->d_type != DT_REG && de->d_type != DT_UNKNOWN))
                continue;
            size_t blen = md_base_len(n);
            uint64_t size;
            md_rec *r;
            struct stat st;
            if (!md_base_field(n, blen, 'W', &size) && !md_base_field(n, blen, 'S', &size)) {
                if ((r = md_index_find_base(ix, n, blen)) != NULL)
                    size = r->size;
                else if (fstatat(dirfd(d), n, &st, 0) == 0)
                    size = (uint64_t)st.st_size;
                else
                    continue;
            }
            *bytes += size;
            (*msgs)++;
        }
        closedir(d);
    }
}

int md_quota_usage(mp_store_user *u, uint64_t *bytes_r, uint64_t *messages_r)
{
    apr_pool_t *pool;
    apr_array_header_t *disks;
    apr_pool_create(&pool, NULL);
    *bytes_r = *messages_r = 0;
    int rv = folder_disks(u, pool, &disks);
    if (rv == MP_STORE_OK) {
        folder_usage(u->root, pool, bytes_r, messages_r);
        for (int i = 0; i < disks->nelts; i++)
            folder_usage(md_disk_dir(u, APR_ARRAY_IDX(disks, i, const char *), pool), pool, bytes_r, messages_r);
    }
    apr_pool_destroy(pool);
    return rv;
}

int md_quota(mp_store_user *u, mp_quota *q)
{
    memset(q, 0, sizeof *q);
    q->bytes_limit = u->bytes_limit;
    q->messages_limit = u->messages_limit;
    return md_quota_usage(u, &q->bytes, &q->messages);
}
