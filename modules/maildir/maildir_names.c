/* Names: users to paths, folders to Maildir++ directories, message file names and their flags. */
#include "maildir.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <unistd.h>

#include <apr_strings.h>

#include "utf7.h"

/* ---- users ---- */

static int has_ctl(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

/* One path component made from a user name part: never ".", "..", hidden, empty or with a "/". */
static int user_part_ok(const char *p, size_t len)
{
    return len > 0 && len <= MD_USER_PART_MAX && p[0] != '.' && !memchr(p, '/', len) && !has_ctl(p, len);
}

int md_user_path(const mp_store *st, const char *user, apr_pool_t *pool, const char **path_r)
{
    size_t ulen = user ? strlen(user) : 0;
    if (ulen == 0 || ulen > MD_USER_MAX || user[0] == '.' || strchr(user, '/') || strstr(user, "..") ||
        has_ctl(user, ulen))
        return MP_STORE_BADNAME;
    const char *at = strrchr(user, '@');
    const char *local = user, *domain = at ? at + 1 : "";
    size_t local_len = at ? (size_t)(at - user) : ulen, domain_len = strlen(domain);

    size_t plen = strlen(st->pattern);
    char *out = apr_palloc(pool, plen + (plen / 2 + 1) * ulen + 1), *o = out;
    for (const char *s = st->pattern; *s; s++) {
        const char *p;
        size_t len;
        if (*s != '%') {
            *o++ = *s;
            continue;
        }
        switch (*++s) {
        case 'u': p = user, len = ulen; break;
        case 'n': p = local, len = local_len; break;
        case 'd': p = domain, len = domain_len; break;
        case '%': *o++ = '%'; continue;
        default: return MP_STORE_BADNAME; /* md_instance refuses such patterns */
        }
        if (!user_part_ok(p, len))
            return MP_STORE_BADNAME; /* e.g. %d of a user without a domain: never "mail//alice" */
        memcpy(o, p, len);
        o += len;
    }
    *o = '\0';
    *path_r = out;
    return MP_STORE_OK;
}

/* ---- folders ---- */

int md_folder_resolve(const mp_store_user *u, const char *name, apr_pool_t *pool, const char **dir_r,
                      const char **disk_r)
{
    size_t len = name ? strnlen(name, MD_FOLDER_NAME_MAX + 1) : 0;
    if (len == 0 || len > MD_FOLDER_NAME_MAX)
        return MP_STORE_BADNAME;
    if (strcasecmp(name, "INBOX") == 0) {
        *dir_r = u->root;
        *disk_r = "INBOX";
        return MP_STORE_OK;
    }
    char disk[MD_NAME_MAX + 1];
    size_t dlen = 0;
    const char *level = name;
    for (int first = 1;; first = 0) {
        const char *end = strchr(level, '/');
        size_t llen = end ? (size_t)(end - level) : strlen(level);
        /* Empty, "." and "..", and any "." at all: Maildir++ joins levels with "." (RFC 3501 section
           5.1 leaves the hierarchy to the server; this one cannot store a "." inside a level). */
        if (llen == 0 || memchr(level, '.', llen) || has_ctl(level, llen))
            return MP_STORE_BADNAME;
        const char *enc;
        size_t elen;
        if (first && llen == 5 && strncasecmp(level, "INBOX", 5) == 0) {
            enc = "INBOX", elen = 5; /* "inbox/x" is INBOX's child, as Dovecot stores it: .INBOX.x */
        } else {
            char *e;
            if (mpc_utf8_to_mutf7(level, llen, pool, &e, &elen) != 0)
                return MP_STORE_BADNAME; /* not UTF-8 */
            enc = e;
        }
        if (dlen + 1 + elen > MD_NAME_MAX)
            return MP_STORE_BADNAME;
        disk[dlen++] = '.';
        memcpy(disk + dlen, enc, elen);
        dlen += elen;
        if (!end)
            break;
        level = end + 1;
    }
    disk[dlen] = '\0';
    *disk_r = apr_pstrdup(pool, disk + 1);
    *dir_r = apr_pstrcat(pool, u->root, "/", disk, NULL);
    return MP_STORE_OK;
}

const char *md_disk_dir(const mp_store_user *u, const char *disk, apr_pool_t *pool)
{
    return strcmp(disk, "INBOX") == 0 ? u->root : apr_pstrcat(pool, u->root, "/.", disk, NULL);
}

const char *md_folder_from_disk(const char *disk, apr_pool_t *pool)
{
    size_t len = strlen(disk);
    if (len == 0 || len + 1 > MD_NAME_MAX)
        return NULL;
    char *out = apr_palloc(pool, len * 2 + 8), *o = out;
    const char *level = disk;
    for (int first = 1;; first = 0) {
        const char *end = strchr(level, '.');
        size_t llen = end ? (size_t)(end - level) : strlen(level);
        char *dec;
        size_t declen;
        if (llen == 0 || mpc_mutf7_to_utf8(level, llen, pool, &dec, &declen) != 0 || has_ctl(dec, declen) ||
            memchr(dec, '/', declen))
            return NULL; /* not one of ours (nor Dovecot's): never shown */
        if (first && declen == 5 && strcasecmp(dec, "INBOX") == 0)
            dec = "INBOX";
        if (!first)
            *o++ = '/';
        memcpy(o, dec, declen);
        o += declen;
        if (!end)
            break;
        level = end + 1;
    }
    *o = '\0';
    return out;
}

int md_keyword_valid(const char *kw)
{
    /* RFC 3501 flag-keyword = atom: no atom-specials, and not a system flag ("\..."). */
    size_t len = kw ? strlen(kw) : 0;
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)kw[i];
        if (c <= 0x20 || c >= 0x7f || strchr("(){%*\"\\]", c))
            return 0;
    }
    return 1;
}

/* ---- message file names ---- */

size_t md_base_len(const char *name)
{
    const char *colon = strchr(name, ':');
    return colon ? (size_t)(colon - name) : strlen(name);
}

/* Maildir's flag letters (https://cr.yp.to/proto/maildir.html), in ASCII order. P (passed) has no IMAP
   flag and is kept as it is. */
static const struct {
    char letter;
    uint32_t flag;
} flag_letters[] = {
    {'D', MP_FLAG_DRAFT}, {'F', MP_FLAG_FLAGGED}, {'R', MP_FLAG_ANSWERED},
    {'S', MP_FLAG_SEEN},  {'T', MP_FLAG_DELETED},
};

uint32_t md_suffix_flags(const char *suffix, uint32_t *kwmask_r)
{
    uint32_t flags = 0, kw = 0;
    if (strncmp(suffix, ":2,", 3) == 0) {
        for (const char *p = suffix + 3; *p; p++) {
            if (*p >= 'a' && *p <= 'z') {
                kw |= 1u << (*p - 'a');
                continue;
            }
            for (size_t i = 0; i < sizeof flag_letters / sizeof flag_letters[0]; i++)
                if (flag_letters[i].letter == *p)
                    flags |= flag_letters[i].flag;
        }
    }
    if (kwmask_r)
        *kwmask_r = kw;
    return flags;
}

char *md_suffix_build(apr_pool_t *pool, const char *old_suffix, uint32_t flags, uint32_t kwmask)
{
    char letters[64];
    size_t n = 0;
    /* Uppercase letters we do not know (e.g. P) survive; ours are set from `flags`. */
    for (char c = 'A'; c <= 'Z'; c++) {
        int ours = 0, on = 0;
        for (size_t i = 0; i < sizeof flag_letters / sizeof flag_letters[0]; i++)
            if (flag_letters[i].letter == c) {
                ours = 1;
                on = (flags & flag_letters[i].flag) != 0;
            }
        if (!ours)
            on = old_suffix && strncmp(old_suffix, ":2,", 3) == 0 && strchr(old_suffix + 3, c) != NULL;
        if (on)
            letters[n++] = c;
    }
    for (int i = 0; i < MD_NKEYWORDS; i++)
        if (kwmask & (1u << i))
            letters[n++] = (char)('a' + i);
    letters[n] = '\0';
    return apr_pstrcat(pool, ":2,", letters, NULL);
}

int md_base_field(const char *base, size_t len, char field, uint64_t *value_r)
{
    for (size_t i = 0; i + 3 < len; i++) {
        if (base[i] != ',' || base[i + 1] != field || base[i + 2] != '=')
            continue;
        uint64_t v = 0;
        size_t j = i + 3, digits = 0;
        while (j < len && base[j] >= '0' && base[j] <= '9' && digits < 19) {
            v = v * 10 + (uint64_t)(base[j] - '0');
            j++, digits++;
        }
        if (digits && (j == len || base[j] == ',')) {
            *value_r = v;
            return 1;
        }
    }
    return 0;
}

const char *md_msg_key(apr_pool_t *pool, const char *base, size_t len)
{
    /* The base name, as qmail and Courier give it for UIDL, when it is a valid one (RFC 1939 section 7:
       1 to 70 characters 0x21-0x7E); else a digest of it, stable all the same. */
    int ok = len > 0 && len <= 70;
    for (size_t i = 0; ok && i < len; i++)
        ok = base[i] > 0x20 && base[i] < 0x7f;
    if (ok)
        return apr_pstrmemdup(pool, base, len);
    uint64_t h1 = 14695981039346656037ull, h2 = 1099511628211ull * 31;
    for (size_t i = 0; i < len; i++) {
        h1 = (h1 ^ (unsigned char)base[i]) * 1099511628211ull;
        h2 = (h2 ^ (unsigned char)base[i]) * 0x100000001b3ull + (h2 >> 29);
    }
    char buf[40];
    snprintf(buf, sizeof buf, "H%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
    return apr_pstrdup(pool, buf);
}

static char host_part[256];
static pthread_once_t host_once = PTHREAD_ONCE_INIT;
static atomic_uint unique_counter;

/* The host name as Dovecot writes it in file names: "/" and ":" (and anything odd) as \ooo. */
static void host_init(void)
{
    char h[128];
    if (gethostname(h, sizeof h) != 0)
        strcpy(h, "localhost");
    h[sizeof h - 1] = '\0';
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)h; *p && n + 5 < sizeof host_part; p++) {
        if (*p > 0x20 && *p < 0x7f && *p != '/' && *p != ':' && *p != ',' && *p != '\\')
            host_part[n++] = (char)*p;
        else
            n += (size_t)snprintf(host_part + n, sizeof host_part - n, "\\%03o", *p);
    }
    host_part[n] = '\0';
}

char *md_unique_base(apr_pool_t *pool)
{
    struct timeval tv;
    pthread_once(&host_once, host_init);
    gettimeofday(&tv, NULL);
    unsigned q = atomic_fetch_add(&unique_counter, 1) + 1;
    char buf[320];
    snprintf(buf, sizeof buf, "%lld.M%ldP%ldQ%u.%s", (long long)tv.tv_sec, (long)tv.tv_usec, (long)getpid(), q,
             host_part); /* snprintf: apr_psprintf has no %lld */
    return apr_pstrdup(pool, buf);
}
