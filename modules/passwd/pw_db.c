/*
 * A Dovecot passwd-file read into a hash table (https://doc.dovecot.org/, "passwd-file"):
 *
 *   user:password:uid:gid:(gecos):home:(shell):extra_fields
 *
 * Only user and password are needed; empty lines and lines starting with '#' are ignored. The password is
 * "{SCHEME}hash", or a bare crypt(3) hash (Dovecot's default scheme CRYPT), or libpam-pwdfile's
 * "hash[13]". extra_fields is everything after the seventh colon: space-separated key=value pairs
 * (`userdb_quota_rule=*:storage=1G nologin allow_nets=192.0.2.0/24`); as in Dovecot, an empty field
 * there followed by more text is the old format and means userdb_mail.
 *
 * A line that cannot be used is logged as FILE:LINE with the reason: without a colon it defines nobody;
 * with a bad or unsupported password the user exists (lookup() finds it, so mail is still delivered) but
 * cannot log in. The rest of the file works. A user defined twice keeps its first line (as Dovecot).
 *
 * User names are full addresses. The domain part (after the last '@') is matched case-insensitively
 * (ASCII), the local part exactly: "Alice@Example.TEST" finds "Alice@example.test" but not
 * "alice@example.test" (RFC 5321 section 2.4: local parts may be case-sensitive).
 */
#include "pw_internal.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <apr_strings.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#ifdef MAILPROTO_HAVE_ARGON2
#include <argon2.h>
#endif

#include "b64.h"
#include "sasl.h"

#define PW_MAX_FILE (256u << 20)         /* a bigger file is refused */
#define SCRAM_MIN_ITERATIONS 4096        /* Dovecot's range starts here (RFC 7677's minimum) */
#define SCRAM_MAX_ITERATIONS 10000000    /* a typo's worth of PBKDF2 would stall a worker for minutes */
#define ARGON2_MAX_M (1u << 21)          /* KiB: 2 GiB per check is surely a typo */
#define ARGON2_MAX_T 1000
#define ARGON2_MAX_P 255

/* ---- user names ---- */

int pw_canon(const char *user, char *buf, size_t size)
{
    size_t len = user ? strlen(user) : 0;
    if (len == 0 || len > PW_MAX_USER || len >= size)
        return -1;
    const char *at = strrchr(user, '@');
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c <= 0x20 || c == 0x7f || c == ':')
            return -1;
        if (at && user + i > at && c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        buf[i] = (char)c;
    }
    buf[len] = '\0';
    return 0;
}

/* ---- loading: messages ---- */

typedef struct pw_load {
    pw_db *db;
    const char *path;
    unsigned line;
    apr_hash_t *classes;   /* cost class -> cost_count, to choose the dummy entry */
    unsigned best_count;
} pw_load;

typedef struct cost_count {
    unsigned n;
    const pw_entry *first;
} cost_count;

#define LOAD_LOG(ld, level, id, fmt, ...) \
    pw_log(level, id, "passwd-file %s:%u: " fmt, (ld)->path, (ld)->line, __VA_ARGS__)

/* ---- password schemes: syntax checks at load time ---- */

static int crypt_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '/';
}

static int all_crypt_chars(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!crypt_char((unsigned char)s[i]))
            return 0;
    return 1;
}

static int all_digits(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* "$5$" / "$6$" [rounds=N$] salt "$" hash, hash of `hash_len` characters (SHA-crypt). */
static int check_sha_crypt(const char *h, size_t len, char id, size_t hash_len)
{
    if (len < 4 || h[0] != '$' || h[1] != id || h[2] != '$')
        return 0;
    const char *p = h + 3, *end = h + len;
    if (end - p > 7 && strncmp(p, "rounds=", 7) == 0) {
        const char *d = memchr(p, '$', (size_t)(end - p));
        if (!d || !all_digits(p + 7, (size_t)(d - p - 7)))
            return 0;
        p = d + 1;
    }
    const char *d = memchr(p, '$', (size_t)(end - p));
    if (!d || d - p > 16)
        return 0;
    return (size_t)(end - d - 1) == hash_len && all_crypt_chars(d + 1, hash_len);
}

/* "$2a$" / "$2b$" / "$2y$" NN "$" 53 characters (bcrypt). */
static int check_bcrypt(const char *h, size_t len)
{
    return len == 60 && h[0] == '$' && h[1] == '2' && (h[2] == 'a' || h[2] == 'b' || h[2] == 'y') && h[3] == '$' &&
           all_digits(h + 4, 2) && h[6] == '$' && all_crypt_chars(h + 7, 53);
}

/* "$1$" salt "$" 22 characters (MD5-crypt). */
static int check_md5_crypt(const char *h, size_t len)
{
    if (len < 4 || strncmp(h, "$1$", 3) != 0)
        return 0;
    const char *d = memchr(h + 3, '$', len - 3);
    return d && d - (h + 3) <= 8 && (size_t)(h + len - d - 1) == 22 && all_crypt_chars(d + 1, 22);
}

/* Does this libcrypt compute hashes of this kind? (crypt_checksalt: method known and enabled.) */
static int crypt_supported(const char *setting)
{
    int r = crypt_checksalt(setting);
    return r == CRYPT_SALT_OK || r == CRYPT_SALT_METHOD_LEGACY
#ifdef CRYPT_SALT_TOO_CHEAP
           || r == CRYPT_SALT_TOO_CHEAP
#endif
        ;
}

/* Any crypt(3) string: known shapes are checked exactly, others must be a setting libcrypt accepts. */
static const char *check_crypt(const char *h, size_t len)
{
    if (len == 0)
        return "empty hash";
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)h[i] <= 0x20 || h[i] == 0x7f)
            return "bad character in the hash";
    if (h[0] == '$' && len > 2 && (h[1] == '6' || h[1] == '5') && h[2] == '$') {
        if (!check_sha_crypt(h, len, h[1], h[1] == '6' ? 86 : 43))
            return h[1] == '6' ? "malformed SHA512-CRYPT hash" : "malformed SHA256-CRYPT hash";
    } else if (h[0] == '$' && len > 3 && h[1] == '2' && h[3] == '$') {
        if (!check_bcrypt(h, len))
            return "malformed BLF-CRYPT hash";
    } else if (h[0] == '$' && len > 2 && h[1] == '1' && h[2] == '$') {
        if (!check_md5_crypt(h, len))
            return "malformed MD5-CRYPT hash";
    } else if (h[0] != '$') {
        if (len != 13 || !all_crypt_chars(h, 13))
            return "malformed crypt hash";
    } else {
        const char *last = strrchr(h, '$');
        if (last == h || (size_t)(last - h) + 1 >= len)
            return "malformed crypt hash";
    }
    if (!crypt_supported(h))
        return h[0] == '$' && h[1] == '2' ? "BLF-CRYPT (bcrypt) is not supported by this libcrypt" :
                                            "this libcrypt does not support this hash method";
    return NULL;
}

/* Dovecot's {SCRAM-SHA-256}iterations,base64(salt),base64(StoredKey),base64(ServerKey) */
static const char *parse_scram(char *copy, const char *h, unsigned char *buf, mp_scram_secret *out)
{
    char *save = NULL;
    char *f[5] = {0};
    int n = 0;
    for (char *t = apr_strtok(copy, ",", &save); t && n < 5; t = apr_strtok(NULL, ",", &save))
        f[n++] = t;
    if (n != 4 || strchr(h, ',') == h || strstr(h, ",,") || h[strlen(h) - 1] == ',')
        return "malformed SCRAM-SHA-256 entry (want iterations,salt,StoredKey,ServerKey)";
    if (!all_digits(f[0], strlen(f[0])) || strlen(f[0]) > 9)
        return "bad SCRAM-SHA-256 iteration count";
    unsigned long iter = strtoul(f[0], NULL, 10);
    if (iter < SCRAM_MIN_ITERATIONS || iter > SCRAM_MAX_ITERATIONS)
        return "SCRAM-SHA-256 iteration count out of range (4096..10000000)";
    size_t n_salt, n_stored, n_server;
    size_t l1 = strlen(f[1]), l2 = strlen(f[2]), l3 = strlen(f[3]);
    if (l1 > 128 || mpc_b64_decode(f[1], l1, buf, &n_salt) != 0 || n_salt == 0 || n_salt > sizeof out->salt)
        return "bad SCRAM-SHA-256 salt";
    memcpy(out->salt, buf, n_salt);
    out->salt_len = n_salt;
    if (l2 > 128 || mpc_b64_decode(f[2], l2, buf, &n_stored) != 0 || n_stored != sizeof out->stored_key)
        return "bad SCRAM-SHA-256 StoredKey";
    memcpy(out->stored_key, buf, n_stored);
    if (l3 > 128 || mpc_b64_decode(f[3], l3, buf, &n_server) != 0 || n_server != sizeof out->server_key)
        return "bad SCRAM-SHA-256 ServerKey";
    memcpy(out->server_key, buf, n_server);
    out->iterations = (unsigned)iter;
    return NULL;
}

/* The parse works on copies of the secret, wiped afterwards (the keys allow an offline dictionary attack). */
static const char *check_scram(apr_pool_t *pool, const char *h, mp_scram_secret *out)
{
    char *copy = apr_pstrdup(pool, h);
    unsigned char buf[MPC_B64_DECODED_MAX(128)];
    const char *err = parse_scram(copy, h, buf, out);
    OPENSSL_cleanse(copy, strlen(h));
    OPENSSL_cleanse(buf, sizeof buf);
    return err;
}

/* Base64 without padding, as in PHC strings. */
static int phc_b64(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return 0;
    }
    return 1;
}

static int phc_param(const char **p, const char *end, char name, unsigned long max, unsigned long *v)
{
    const char *s = *p;
    if (end - s < 3 || s[0] != name || s[1] != '=')
        return 0;
    s += 2;
    const char *d = s;
    while (d < end && *d >= '0' && *d <= '9')
        d++;
    if (d == s || d - s > 10)
        return 0;
    *v = strtoul(s, NULL, 10);
    *p = d;
    return *v >= 1 && *v <= max;
}

/* $argon2i$ / $argon2id$ [v=19$] m=M,t=T,p=P $ salt $ hash  (the PHC string libargon2 and libsodium write) */
static const char *check_argon2(const char *h, size_t len, pw_scheme scheme)
{
    const char *want = scheme == PW_ARGON2I ? "$argon2i$" : "$argon2id$";
    size_t wl = strlen(want);
    if (len < wl || strncmp(h, want, wl) != 0)
        return scheme == PW_ARGON2I ? "ARGON2I entry is not a $argon2i$ string" :
                                      "ARGON2ID entry is not a $argon2id$ string";
    const char *p = h + wl, *end = h + len;
    unsigned long m, t, par;
    if (end - p > 2 && p[0] == 'v' && p[1] == '=') {
        const char *d = memchr(p, '$', (size_t)(end - p));
        if (!d || !all_digits(p + 2, (size_t)(d - p - 2)))
            return "malformed ARGON2 version";
        p = d + 1;
    }
    if (!phc_param(&p, end, 'm', ARGON2_MAX_M, &m) || p >= end || *p++ != ',' ||
        !phc_param(&p, end, 't', ARGON2_MAX_T, &t) || p >= end || *p++ != ',' ||
        !phc_param(&p, end, 'p', ARGON2_MAX_P, &par) || p >= end || *p++ != '$')
        return "malformed or out-of-range ARGON2 parameters";
    const char *d = memchr(p, '$', (size_t)(end - p));
    if (!d || !phc_b64(p, (size_t)(d - p)) || !phc_b64(d + 1, (size_t)(end - d - 1)))
        return "malformed ARGON2 salt or hash";
    return NULL;
}

/* A string telling how expensive checking this entry is, to pick the dummy entry for unknown users. */
static const char *cost_class(apr_pool_t *pool, const pw_entry *e)
{
    const char *h = e->hash;
    switch (e->scheme) {
    case PW_PLAIN:
        return "PLAIN";
    case PW_SCRAM_SHA256:
        return apr_psprintf(pool, "SCRAM:%u", e->scram.iterations);
    case PW_ARGON2I:
    case PW_ARGON2ID: { /* everything before "$salt$hash" */
        const char *d = strrchr(h, '$');
        while (d && d > h && d[-1] != '$')
            d--;
        return d && d > h ? apr_pstrmemdup(pool, h, (size_t)(d - h - 1)) : h;
    }
    case PW_CRYPT: {
        if (h[0] != '$')
            return "DES";
        const char *d = strchr(h + 1, '$');            /* "$6$" */
        if (!d)
            return h;
        const char *next = strchr(d + 1, '$');
        if (next && (h[1] == '2' || strncmp(d + 1, "rounds=", 7) == 0 || (h[1] != '5' && h[1] != '6' && h[1] != '1')))
            return apr_pstrmemdup(pool, h, (size_t)(next - h + 1)); /* "$2y$10$", "$6$rounds=N$", "$y$j9T$" */
        return apr_pstrmemdup(pool, h, (size_t)(d - h + 1));
    }
    default:
        return NULL;
    }
}

/* ---- loading: one password field ---- */

typedef struct scheme_name {
    const char *name;
    pw_scheme scheme;
    const char *crypt_prefix; /* for crypt schemes: what the hash must start with, NULL for any */
} scheme_name;

static const scheme_name scheme_names[] = {
    {"SHA512-CRYPT", PW_CRYPT, "$6$"},
    {"SHA256-CRYPT", PW_CRYPT, "$5$"},
    {"BLF-CRYPT", PW_CRYPT, "$2"},
    {"MD5-CRYPT", PW_CRYPT, "$1$"},
    {"CRYPT", PW_CRYPT, NULL},
    {"PLAIN", PW_PLAIN, NULL},
    {"CLEAR", PW_PLAIN, NULL},
    {"CLEARTEXT", PW_PLAIN, NULL},
    {"SCRAM-SHA-256", PW_SCRAM_SHA256, NULL},
    {"ARGON2I", PW_ARGON2I, NULL},
    {"ARGON2ID", PW_ARGON2ID, NULL},
};

static int printable_ascii(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            return 0;
    return 1;
}

/* Fills e->scheme and the hash fields from the password field; logs and sets PW_BAD when unusable. */
static void parse_password(pw_load *ld, pw_entry *e, const char *pw)
{
    apr_pool_t *pool = ld->db->pool;
    size_t len = strlen(pw);
    const char *err = NULL;
    e->scheme = PW_BAD;
    if (len == 0) {
        e->scheme = PW_NONE;
        LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_NOPASSWORD, "user %s has no password and cannot log in", e->user);
        return;
    }
    const scheme_name *sn = NULL;
    const char *hash = pw;
    if (pw[0] == '{') {
        const char *close = strchr(pw, '}');
        if (!close) {
            LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "user %s: no '}' after the password scheme; "
                     "the user cannot log in", e->user);
            return;
        }
        size_t nl = (size_t)(close - pw - 1);
        for (size_t i = 0; i < sizeof scheme_names / sizeof scheme_names[0]; i++)
            if (strlen(scheme_names[i].name) == nl && strncasecmp(scheme_names[i].name, pw + 1, nl) == 0)
                sn = &scheme_names[i];
        if (!sn) {
            LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "user %s: unknown password scheme {%.*s}; "
                     "the user cannot log in", e->user, (int)(nl > 40 ? 40 : nl), pw + 1);
            return;
        }
        hash = close + 1;
    } else if (len > 4 && pw[0] != '$' && pw[len - 1] == ']' && pw[len - 4] == '[') {
        /* libpam-pwdfile: hash[13] is crypt, hash[34] is PLAIN-MD5 */
        if (strncmp(pw + len - 4, "[13]", 4) != 0) {
            LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "user %s: unsupported libpam-pwdfile password type %s; "
                     "the user cannot log in", e->user, pw + len - 4);
            return;
        }
        hash = apr_pstrmemdup(pool, pw, len - 4);
    }
    pw_scheme scheme = sn ? sn->scheme : PW_CRYPT;
    size_t hlen = strlen(hash);

    switch (scheme) {
    case PW_CRYPT:
        if (sn && sn->crypt_prefix && strncmp(hash, sn->crypt_prefix, strlen(sn->crypt_prefix)) != 0) {
            err = apr_psprintf(pool, "{%s} hash does not start with %s", sn->name, sn->crypt_prefix);
        } else {
            err = check_crypt(hash, hlen);
        }
        break;
    case PW_PLAIN:
        if (hlen == 0) {
            e->scheme = PW_NONE;
            LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_NOPASSWORD, "user %s has an empty {%s} password and cannot log in",
                     e->user, sn->name);
            return;
        }
        SHA256((const unsigned char *)hash, hlen, e->plain_digest);
        e->plain_ascii = printable_ascii(hash);
        break;
    case PW_SCRAM_SHA256:
        err = check_scram(pool, hash, &e->scram);
        break;
    case PW_ARGON2I:
    case PW_ARGON2ID:
#ifdef MAILPROTO_HAVE_ARGON2
        err = check_argon2(hash, hlen, scheme);
#else
        (void)check_argon2;
        err = "ARGON2 is not supported by this build (built without libargon2)";
#endif
        break;
    default:
        err = "unsupported scheme";
        break;
    }
    if (err) {
        LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "user %s: %s; the user cannot log in", e->user, err);
        return;
    }
    e->scheme = scheme;
    e->hash = hash;
    e->hash_len = hlen;
}

/* ---- loading: extra fields and quota ---- */

/* NNN with an optional unit suffix b/k/M/G/T (any case); a number without suffix counts `unit` bytes. */
static int parse_size(const char *s, uint64_t unit, uint64_t *out)
{
    const char *p = s;
    uint64_t v = 0;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    uint64_t mul = unit;
    if (*p) {
        switch (*p) {
        case 'b': case 'B': mul = 1; break;
        case 'k': case 'K': mul = 1ull << 10; break;
        case 'm': case 'M': mul = 1ull << 20; break;
        case 'g': case 'G': mul = 1ull << 30; break;
        case 't': case 'T': mul = 1ull << 40; break;
        default: return -1;
        }
        if (p[1] && !((p[1] == 'B' || p[1] == 'b') && !p[2] && mul != 1))
            return -1; /* "1G" and "1GB" are fine, "1Gx" is not */
    }
    if (v && mul > UINT64_MAX / v)
        return -1;
    *out = v * mul;
    return 0;
}

static int parse_count(const char *s, uint64_t *out)
{
    if (!all_digits(s, strlen(s)) || strlen(s) > 19)
        return -1;
    *out = strtoull(s, NULL, 10);
    return 0;
}

/*
 * Dovecot quota rule "MAILBOX:LIMIT[:LIMIT...]". Only the "*" rule sets the user's limits; limits are
 * storage=N (KiB, or with a b/k/M/G/T suffix), bytes=N (bytes, or with a suffix) and messages=N. Relative
 * ("+10M") and percent limits, and rules for single mailboxes, are kept in the fields but not applied.
 */
static void parse_quota_rule(pw_load *ld, pw_entry *e, const char *key, const char *value)
{
    if (strncmp(value, "*:", 2) != 0)
        return;
    char *copy = apr_pstrdup(ld->db->pool, value + 2), *save = NULL;
    for (char *lim = apr_strtok(copy, ":", &save); lim; lim = apr_strtok(NULL, ":", &save)) {
        const char *eq = strchr(lim, '=');
        const char *v = eq ? eq + 1 : "";
        size_t kl = eq ? (size_t)(eq - lim) : strlen(lim);
        int bad = 0;
        if (v[0] == '+' || v[0] == '-' || strchr(v, '%')) {
            LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: %s: relative limit \"%s\" is not applied", e->user,
                     key, lim);
            continue;
        }
        if (kl == 7 && strncmp(lim, "storage", 7) == 0)
            bad = parse_size(v, 1024, &e->quota_bytes);
        else if (kl == 5 && strncmp(lim, "bytes", 5) == 0)
            bad = parse_size(v, 1, &e->quota_bytes);
        else if (kl == 8 && strncmp(lim, "messages", 8) == 0)
            bad = parse_count(v, &e->quota_messages);
        else if (!(kl == 6 && strncmp(lim, "ignore", 6) == 0) && !(kl == 7 && strncmp(lim, "backend", 7) == 0))
            bad = -1;
        if (bad)
            LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: %s: cannot understand \"%s\"; ignored", e->user,
                     key, lim);
    }
}

static int is_quota_rule_key(const char *k)
{
    if (strncmp(k, "userdb_quota_rule", 17) != 0)
        return 0;
    return k[17] == '\0' || all_digits(k + 17, strlen(k + 17));
}

static void parse_extra_fields(pw_load *ld, pw_entry *e, const char *extra)
{
    char *copy = apr_pstrdup(ld->db->pool, extra), *save = NULL;
    for (char *tok = apr_strtok(copy, " \t", &save); tok; tok = apr_strtok(NULL, " \t", &save)) {
        char *eq = strchr(tok, '=');
        const char *value = "";
        if (eq) {
            *eq = '\0';
            value = eq + 1;
        }
        if (!*tok) {
            LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: extra field without a name; ignored", e->user);
            continue;
        }
        apr_table_set(e->fields, tok, value);
        if (strcmp(tok, "nologin") == 0) {
            e->nologin = 1;
        } else if (strcmp(tok, "nopassword") == 0) {
            e->nopassword = 1;
            LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: \"nopassword\" (any password) is not supported; "
                     "the user cannot log in", e->user);
        } else if (strcmp(tok, "allow_nets") == 0) {
            if (!mpc_sasl_nets_valid(value))
                LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: allow_nets \"%s\" has entries that are not "
                         "addresses or networks; they match nothing", e->user, value);
        } else if (is_quota_rule_key(tok)) {
            parse_quota_rule(ld, e, tok, value);
        } else if (strcmp(tok, "userdb_quota_storage_size") == 0) { /* Dovecot 2.4 names */
            if (parse_size(value, 1, &e->quota_bytes) != 0)
                LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: bad %s \"%s\"; ignored", e->user, tok, value);
        } else if (strcmp(tok, "userdb_quota_message_count") == 0) {
            if (parse_count(value, &e->quota_messages) != 0)
                LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_FIELD, "user %s: bad %s \"%s\"; ignored", e->user, tok, value);
        }
    }
}

/* ---- loading: lines ---- */

static void parse_line(pw_load *ld, char *line)
{
    pw_db *db = ld->db;
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0' || *p == '#')
        return;
    char *f[8] = {0};
    int n = 0;
    f[n++] = line;
    for (char *c = line; n < 7 && (c = strchr(c, ':')) != NULL;) {
        *c++ = '\0';
        f[n++] = c;
    }
    if (n == 7) { /* after the shell: everything else, colons included, is extra_fields */
        char *c = strchr(f[6], ':');
        if (c) {
            *c = '\0';
            f[n++] = c + 1;
        }
    }
    if (n < 2) {
        LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "%s", "no ':' after the user name; line ignored");
        return;
    }
    char canon[PW_MAX_USER + 1];
    if (pw_canon(f[0], canon, sizeof canon) != 0) {
        LOAD_LOG(ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "%s", "empty or invalid user name; line ignored");
        return;
    }
    pw_entry *old = apr_hash_get(db->users, canon, APR_HASH_KEY_STRING);
    if (old) {
        LOAD_LOG(ld, MP_LOG_WARN, PW_LOG_DUPLICATE, "user %s is already defined at line %u; line ignored", canon,
                 old->line);
        return;
    }
    pw_entry *e = apr_pcalloc(db->pool, sizeof *e);
    e->user = apr_pstrdup(db->pool, canon);
    e->line = ld->line;
    e->fields = apr_table_make(db->pool, 4);
    parse_password(ld, e, f[1]);
    if (n > 2 && *f[2])
        apr_table_set(e->fields, "uid", f[2]);
    if (n > 3 && *f[3])
        apr_table_set(e->fields, "gid", f[3]);
    if (n > 5 && *f[5])
        apr_table_set(e->fields, "home", f[5]);
    if (n > 7 && *f[7]) {
        if (*f[7] == ':') { /* old format: an empty field, then the mail location */
            if (f[7][1])
                apr_table_set(e->fields, "userdb_mail", f[7] + 1);
        } else {
            parse_extra_fields(ld, e, f[7]);
        }
    }
    apr_hash_set(db->users, e->user, APR_HASH_KEY_STRING, e);
    db->nusers++;

    if (!pw_entry_can_login(e))
        return;
    db->nlogin++;
    if (e->scheme == PW_PLAIN) {
        db->nplaintext++;
        if (e->plain_ascii) {
            db->nscram++;
            db->nderived++;
        }
    } else if (e->scheme == PW_SCRAM_SHA256) {
        db->nscram++;
        db->scram_model = e;
    }
    const char *cls = cost_class(db->pool, e);
    if (cls) {
        cost_count *cc = apr_hash_get(ld->classes, cls, APR_HASH_KEY_STRING);
        if (!cc) {
            cc = apr_pcalloc(db->pool, sizeof *cc);
            cc->first = e;
            apr_hash_set(ld->classes, cls, APR_HASH_KEY_STRING, cc);
        }
        if (++cc->n > ld->best_count) { /* the first entry of the most common class */
            ld->best_count = cc->n;
            db->dummy = cc->first;
        }
    }
}

/* The file's text holds plaintext passwords and hashes: wiped before the pool frees it. */
typedef struct wipe_buf {
    void *p;
    size_t len;
} wipe_buf;

static apr_status_t wipe_cleanup(void *data)
{
    wipe_buf *wb = data;
    OPENSSL_cleanse(wb->p, wb->len);
    return APR_SUCCESS;
}

static apr_status_t db_cleanup_entries(void *data)
{
    pw_db *db = data;
    /* wipe what could help guess passwords: plaintexts, digests, SCRAM keys */
    for (apr_hash_index_t *hi = apr_hash_first(NULL, db->users); hi; hi = apr_hash_next(hi)) {
        pw_entry *e = apr_hash_this_val(hi);
        if (e->scheme == PW_PLAIN && e->hash)
            OPENSSL_cleanse((void *)e->hash, e->hash_len);
        OPENSSL_cleanse(e->plain_digest, sizeof e->plain_digest);
        OPENSSL_cleanse(&e->scram, sizeof e->scram);
    }
    return APR_SUCCESS;
}

pw_db *pw_db_load(const char *path, int *errno_r, const char **err_r)
{
    *errno_r = 0;
    *err_r = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *errno_r = errno;
        *err_r = "cannot open";
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        *errno_r = errno;
        *err_r = "cannot stat";
    } else if (!S_ISREG(st.st_mode)) {
        *errno_r = EINVAL;
        *err_r = "not a regular file";
    } else if ((uint64_t)st.st_size > PW_MAX_FILE) {
        *errno_r = EFBIG;
        *err_r = "larger than 256 MiB";
    }
    if (*err_r) {
        close(fd);
        return NULL;
    }
    apr_pool_t *pool;
    if (apr_pool_create_unmanaged_ex(&pool, NULL, NULL) != APR_SUCCESS) {
        close(fd);
        *errno_r = ENOMEM;
        *err_r = "out of memory";
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    wipe_buf *wb = apr_palloc(pool, sizeof *wb);
    char *text = apr_palloc(pool, size + 1);
    wb->p = text;
    wb->len = size + 1;
    apr_pool_cleanup_register(pool, wb, wipe_cleanup, apr_pool_cleanup_null);
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, text + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            *errno_r = errno;
            *err_r = "cannot read";
            close(fd);
            apr_pool_destroy(pool);
            return NULL;
        }
        if (r == 0)
            break; /* shrank while reading: the next check sees the change */
        got += (size_t)r;
    }
    close(fd);
    text[got] = '\0';

    pw_db *db = apr_pcalloc(pool, sizeof *db);
    db->pool = pool;
    db->path = apr_pstrdup(pool, path);
    db->users = apr_hash_make(pool);
    db->id = st;
    apr_pool_cleanup_register(pool, db, db_cleanup_entries, apr_pool_cleanup_null);
    pw_load ld = {.db = db, .path = db->path, .classes = apr_hash_make(pool)};

    char *line = text, *end = text + got;
    while (line < end) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *le = nl ? nl : end;
        ld.line++;
        int has_nul = memchr(line, '\0', (size_t)(le - line)) != NULL;
        *le = '\0';
        if (le > line && le[-1] == '\r')
            le[-1] = '\0';
        if (has_nul)
            LOAD_LOG(&ld, MP_LOG_ERROR, PW_LOG_MALFORMED, "%s", "NUL byte in the line; line ignored");
        else
            parse_line(&ld, line);
        line = le + 1;
    }
    return db;
}

void pw_db_free(pw_db *db)
{
    if (db)
        apr_pool_destroy(db->pool);
}

const pw_entry *pw_db_find(const pw_db *db, const char *user)
{
    char canon[PW_MAX_USER + 1];
    if (!db || pw_canon(user, canon, sizeof canon) != 0)
        return NULL;
    return apr_hash_get(db->users, canon, APR_HASH_KEY_STRING);
}

int pw_entry_can_login(const pw_entry *e)
{
    return e && e->scheme != PW_NONE && e->scheme != PW_BAD && !e->nologin && !e->nopassword;
}

/* ---- checking passwords ---- */

static int check_crypt_hash(const char *hash, size_t hash_len, const char *password)
{
    struct crypt_data *cd = calloc(1, sizeof *cd); /* 32 KiB: not on a worker's stack */
    if (!cd)
        return 0;
    const char *r = crypt_r(password, hash, cd);
    int ok = r && r[0] != '*' && strlen(r) == hash_len && CRYPTO_memcmp(r, hash, hash_len) == 0;
    OPENSSL_cleanse(cd, sizeof *cd);
    free(cd);
    return ok;
}

int pw_entry_check(const pw_entry *e, const char *password)
{
    if (!e || !password)
        return 0;
    switch (e->scheme) {
    case PW_CRYPT:
        return check_crypt_hash(e->hash, e->hash_len, password);
    case PW_PLAIN: {
        unsigned char d[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)password, strlen(password), d);
        int ok = CRYPTO_memcmp(d, e->plain_digest, sizeof d) == 0;
        OPENSSL_cleanse(d, sizeof d);
        return ok;
    }
    case PW_SCRAM_SHA256: {
        mp_scram_secret s;
        int ok = mpc_sasl_scram_derive(password, strlen(password), e->scram.salt, e->scram.salt_len,
                                       e->scram.iterations, &s) == 0 &&
                 CRYPTO_memcmp(s.stored_key, e->scram.stored_key, sizeof s.stored_key) == 0;
        OPENSSL_cleanse(&s, sizeof s);
        return ok;
    }
#ifdef MAILPROTO_HAVE_ARGON2
    case PW_ARGON2I:
    case PW_ARGON2ID: {
        int r = argon2_verify(e->hash, password, strlen(password), e->scheme == PW_ARGON2I ? Argon2_i : Argon2_id);
        if (r != ARGON2_OK && r != ARGON2_VERIFY_MISMATCH)
            pw_log(MP_LOG_ERROR, PW_LOG_VERIFY, "passwd-file: user %s: argon2: %s", e->user, argon2_error_message(r));
        return r == ARGON2_OK;
    }
#endif
    default:
        return 0;
    }
}

void pw_db_dummy_check(const pw_db *db, const char *password)
{
    /* a SHA512-CRYPT hash of nothing in particular, for files without any usable entry */
    static const char fallback[] = "$6$mailprotodummy$8cSsIrRcmJJ6mV4rKg9Ulb0n0aACvJvESxrUJbUSRoMRzN7.N4fSG1"
                                   "zwE4wdMfuHXn/K5J3UtElR1/jP2BvWM0";
    const char *pw = password ? password : "";
    if (db && db->dummy)
        (void)pw_entry_check(db->dummy, pw);
    else
        (void)check_crypt_hash(fallback, sizeof fallback - 1, pw);
}
