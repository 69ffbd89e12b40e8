/* The SMTP command parser (see smtp_parse.h). */
#include "smtp_parse.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "utf8.h"

/* ---------------------------------------------------------------- line framing */

smtp_line_status smtp_line_find(const char *data, size_t len, size_t *line_len, size_t *consumed, int *bare)
{
    int b = 0;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (c == '\n') {
            if (i > 0 && data[i - 1] == '\r') {
                *line_len = i - 1;
                *consumed = i + 1;
                *bare = b;
                return SMTP_LINE_OK;
            }
            b = 1; /* a bare LF: RFC 5321 section 2.3.8 */
        } else if (c == '\r' && i + 1 < len && data[i + 1] != '\n') {
            b = 1; /* a bare CR */
        }
    }
    *bare = b;
    return SMTP_LINE_MORE;
}

/* ---------------------------------------------------------------- helpers */

static int is_alpha(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_letdig(unsigned char c) { return is_alpha(c) || is_digit(c); }

int smtp_slice_ieq(smtp_slice a, const char *b)
{
    size_t n = strlen(b);
    return a.len == n && strncasecmp(a.p, b, n) == 0;
}

int smtp_utf8_valid(const unsigned char *s, size_t len)
{
    return mpc_utf8_valid(s, len);
}

/* ---------------------------------------------------------------- commands */

static const struct {
    const char *verb;
    smtp_cmd_id id;
} verbs[] = {
    {"HELO", SMTP_CMD_HELO}, {"EHLO", SMTP_CMD_EHLO}, {"LHLO", SMTP_CMD_LHLO}, {"MAIL", SMTP_CMD_MAIL},
    {"RCPT", SMTP_CMD_RCPT}, {"DATA", SMTP_CMD_DATA}, {"BDAT", SMTP_CMD_BDAT}, {"RSET", SMTP_CMD_RSET},
    {"NOOP", SMTP_CMD_NOOP}, {"QUIT", SMTP_CMD_QUIT}, {"VRFY", SMTP_CMD_VRFY}, {"EXPN", SMTP_CMD_EXPN},
    {"HELP", SMTP_CMD_HELP}, {"STARTTLS", SMTP_CMD_STARTTLS}, {"AUTH", SMTP_CMD_AUTH},
};

int smtp_parse_command(const char *line, size_t len, smtp_command *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    size_t i = 0;
    while (i < len && is_alpha((unsigned char)line[i]))
        i++;
    cmd->verb.p = line;
    cmd->verb.len = i;
    if (i == 0 || (i < len && line[i] != ' '))
        return -1; /* RFC 5321 section 4.1.1: the verb, then SP or the end */
    for (size_t k = 0; k < sizeof verbs / sizeof verbs[0]; k++)
        if (smtp_slice_ieq(cmd->verb, verbs[k].verb)) {
            cmd->id = verbs[k].id;
            break;
        }
    if (i < len) {
        cmd->has_arg = 1;
        i++; /* the SP */
    }
    cmd->arg.p = line + i;
    cmd->arg.len = len - i;
    if (cmd->id == SMTP_CMD_MAIL || cmd->id == SMTP_CMD_RCPT) {
        /* RFC 5321 section 4.1.1.2/4.1.1.3: "MAIL FROM:" / "RCPT TO:" */
        const char *kw = cmd->id == SMTP_CMD_MAIL ? "FROM:" : "TO:";
        size_t n = strlen(kw);
        if (cmd->arg.len < n || strncasecmp(cmd->arg.p, kw, n) != 0)
            return -1;
        cmd->arg.p += n;
        cmd->arg.len -= n;
    }
    return 0;
}

/* ---------------------------------------------------------------- paths (RFC 5321 section 4.1.2) */

typedef struct cursor {
    const unsigned char *p;
    size_t i, len;
    int utf8;  /* saw a byte over 0x7f */
} cursor;

static int cur_peek(const cursor *c) { return c->i < c->len ? c->p[c->i] : -1; }

/* atext (RFC 5322 section 3.2.3) as RFC 5321 uses it; RFC 6531 section 3.3 adds UTF8-non-ascii. */
static int is_atext(int ch)
{
    if (ch < 0)
        return 0;
    if (ch >= 0x80)
        return 1;
    return is_letdig((unsigned char)ch) || (ch && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* sub-domain = Let-dig [Ldh-str] (RFC 5321), or a U-label (RFC 6531 section 3.3). */
static int parse_subdomain(cursor *c)
{
    size_t start = c->i;
    int last = -1;
    while (c->i < c->len) {
        int ch = c->p[c->i];
        if (ch >= 0x80) {
            c->utf8 = 1;
        } else if (!(is_letdig((unsigned char)ch) || ch == '-')) {
            break;
        }
        if (c->i == start && ch == '-')
            return -1;
        last = ch;
        c->i++;
    }
    if (c->i == start || last == '-')
        return -1;
    return 0;
}

static int parse_domain(cursor *c)
{
    if (parse_subdomain(c) < 0)
        return -1;
    while (cur_peek(c) == '.') {
        c->i++;
        if (parse_subdomain(c) < 0)
            return -1;
    }
    return 0;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal / General-address-literal ) "]" */
static int parse_address_literal(cursor *c)
{
    if (cur_peek(c) != '[')
        return -1;
    size_t start = ++c->i;
    while (c->i < c->len && c->p[c->i] != ']') {
        unsigned char ch = c->p[c->i];
        if (ch < 33 || ch > 126 || ch == '[' || ch == '\\')
            return -1; /* dcontent = %d33-90 / %d94-126 */
        c->i++;
    }
    if (c->i >= c->len)
        return -1;
    size_t n = c->i - start;
    c->i++; /* ] */
    char buf[128];
    unsigned char addr[16];
    if (n == 0 || n >= sizeof buf)
        return -1;
    memcpy(buf, c->p + start, n);
    buf[n] = '\0';
    if (strncasecmp(buf, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, buf + 5, addr) == 1 ? 0 : -1;
    if (is_digit((unsigned char)buf[0]))
        return inet_pton(AF_INET, buf, addr) == 1 ? 0 : -1;
    /* General-address-literal = Standardized-tag ":" 1*dcontent */
    char *colon = strchr(buf, ':');
    if (!colon || colon == buf || colon[1] == '\0')
        return -1;
    for (char *q = buf; q < colon; q++)
        if (!is_letdig((unsigned char)*q) && *q != '-')
            return -1;
    return 0;
}

/* Local-part = Dot-string / Quoted-string */
static int parse_local(cursor *c)
{
    if (cur_peek(c) == '"') {
        c->i++;
        for (;;) {
            int ch = cur_peek(c);
            if (ch < 0)
                return -1;
            c->i++;
            if (ch == '"')
                return 0;
            if (ch == '\\') { /* quoted-pairSMTP = %d92 %d32-126 */
                int d = cur_peek(c);
                if (d < 32 || d > 126)
                    return -1;
                c->i++;
            } else if (ch >= 0x80) {
                c->utf8 = 1;
            } else if (ch < 32 || ch > 126) {
                return -1; /* qtextSMTP = %d32-33 / %d35-91 / %d93-126 */
            }
        }
    }
    /* Dot-string = Atom *("."  Atom) */
    for (;;) {
        size_t start = c->i;
        while (is_atext(cur_peek(c))) {
            if (c->p[c->i] >= 0x80)
                c->utf8 = 1;
            c->i++;
        }
        if (c->i == start)
            return -1;
        if (cur_peek(c) != '.')
            return 0;
        c->i++;
    }
}

static smtp_parse_result parse_path(cursor *c, int rcpt, smtp_path *path)
{
    memset(path, 0, sizeof *path);
    size_t open = c->i;
    if (cur_peek(c) != '<')
        return SMTP_PARSE_BAD_PATH;
    c->i++;
    if (cur_peek(c) == '>') {
        c->i++;
        if (rcpt)
            return SMTP_PARSE_BAD_PATH; /* Forward-path has no null form */
        path->null_path = 1;
        return SMTP_PARSE_OK;
    }
    if (rcpt && c->len - c->i >= 11 && strncasecmp((const char *)c->p + c->i, "Postmaster>", 11) == 0) {
        path->postmaster = 1; /* RFC 5321 section 4.5.1: "<Postmaster>" must be accepted */
        path->mailbox.p = path->local.p = (const char *)c->p + c->i;
        path->mailbox.len = path->local.len = 10;
        c->i += 11;
        return SMTP_PARSE_OK;
    }
    /* [ A-d-l ":" ]: a source route, accepted and ignored (RFC 5321 section 4.1.2 and appendix C) */
    if (cur_peek(c) == '@') {
        for (;;) {
            c->i++; /* @ */
            if (parse_domain(c) < 0)
                return SMTP_PARSE_BAD_PATH;
            if (cur_peek(c) == ',') {
                c->i++;
                if (cur_peek(c) != '@')
                    return SMTP_PARSE_BAD_PATH;
                continue;
            }
            if (cur_peek(c) != ':')
                return SMTP_PARSE_BAD_PATH;
            c->i++;
            break;
        }
    }
    size_t mb = c->i;
    if (parse_local(c) < 0)
        return SMTP_PARSE_BAD_PATH;
    size_t local_end = c->i;
    if (cur_peek(c) != '@')
        return SMTP_PARSE_BAD_PATH;
    c->i++;
    size_t dom = c->i;
    if (cur_peek(c) == '[') {
        if (parse_address_literal(c) < 0)
            return SMTP_PARSE_BAD_PATH;
        path->literal = 1;
    } else if (parse_domain(c) < 0) {
        return SMTP_PARSE_BAD_PATH;
    }
    size_t end = c->i;
    if (cur_peek(c) != '>')
        return SMTP_PARSE_BAD_PATH;
    c->i++;
    path->local.p = (const char *)c->p + mb;
    path->local.len = local_end - mb;
    path->domain.p = (const char *)c->p + dom;
    path->domain.len = end - dom;
    path->mailbox.p = (const char *)c->p + mb;
    path->mailbox.len = end - mb;
    path->utf8 = c->utf8;
    /* RFC 5321 section 4.5.3.1.1-3: local part 64, domain 255, path 256 octets */
    if (path->local.len > 64 || path->domain.len > 255 || c->i - open > 256)
        return SMTP_PARSE_PATH_LONG;
    if (path->utf8 && !smtp_utf8_valid((const unsigned char *)path->mailbox.p, path->mailbox.len))
        return SMTP_PARSE_BAD_UTF8;
    return SMTP_PARSE_OK;
}

smtp_parse_result smtp_parse_envelope(const char *arg, size_t len, int rcpt, smtp_envelope_arg *out)
{
    cursor c = {.p = (const unsigned char *)arg, .i = 0, .len = len};
    memset(out, 0, sizeof *out);
    while (cur_peek(&c) == ' ')
        c.i++; /* "MAIL FROM: <a@b>": not RFC 5321, but harmless and common */
    smtp_parse_result r = parse_path(&c, rcpt, &out->path);
    if (r != SMTP_PARSE_OK)
        return r;
    /* Mail-parameters = esmtp-param *(SP esmtp-param) */
    while (c.i < c.len) {
        if (c.p[c.i] != ' ')
            return SMTP_PARSE_BAD_PATH; /* junk right after the path */
        while (cur_peek(&c) == ' ')
            c.i++;
        if (c.i >= c.len)
            break;
        if (out->nparams >= SMTP_MAX_PARAMS)
            return SMTP_PARSE_TOO_MANY;
        smtp_param *pm = &out->params[out->nparams++];
        /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
        size_t k = c.i;
        if (!is_letdig(c.p[c.i]))
            return SMTP_PARSE_BAD_PARAM;
        while (c.i < c.len && (is_letdig(c.p[c.i]) || c.p[c.i] == '-'))
            c.i++;
        pm->key.p = arg + k;
        pm->key.len = c.i - k;
        if (cur_peek(&c) == '=') {
            c.i++;
            /* esmtp-value = 1*(%d33-60 / %d62-126), RFC 6531 section 3.3: / UTF8-non-ascii */
            size_t v = c.i;
            while (c.i < c.len && c.p[c.i] != ' ') {
                unsigned char ch = c.p[c.i];
                if (ch >= 0x80)
                    c.utf8 = 1;
                else if (ch < 33 || ch > 126 || ch == '=')
                    return SMTP_PARSE_BAD_PARAM;
                c.i++;
            }
            if (c.i == v)
                return SMTP_PARSE_BAD_PARAM;
            pm->value.p = arg + v;
            pm->value.len = c.i - v;
            pm->has_value = 1;
            if (!smtp_utf8_valid((const unsigned char *)pm->value.p, pm->value.len))
                return SMTP_PARSE_BAD_UTF8;
        } else if (c.i < c.len && c.p[c.i] != ' ') {
            return SMTP_PARSE_BAD_PARAM;
        }
    }
    return SMTP_PARSE_OK;
}

const smtp_param *smtp_find_param(const smtp_envelope_arg *a, const char *key, int *dup)
{
    const smtp_param *found = NULL;
    for (size_t i = 0; i < a->nparams; i++)
        if (smtp_slice_ieq(a->params[i].key, key)) {
            if (found && dup)
                *dup = 1;
            if (!found)
                found = &a->params[i];
        }
    return found;
}

int smtp_xtext_valid(const char *s, size_t len, int utf8)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            if (len - i < 3)
                return 0;
            for (int k = 1; k <= 2; k++) {
                unsigned char h = (unsigned char)s[i + k];
                if (!(is_digit(h) || (h >= 'A' && h <= 'F')))
                    return 0;
            }
            i += 2;
        } else if (c >= 0x80) {
            if (!utf8)
                return 0;
        } else if (c < 33 || c > 126 || c == '=') {
            return 0;
        }
    }
    return !utf8 || smtp_utf8_valid((const unsigned char *)s, len);
}

size_t smtp_xtext_decode(const char *s, size_t len, char *out)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '+' && len - i >= 3) {
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                unsigned char h = (unsigned char)s[i + k];
                v = v * 16 + (is_digit(h) ? (unsigned)(h - '0') : (unsigned)(h - 'A' + 10));
            }
            out[n++] = (char)v;
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return n;
}

int smtp_dsn_text_ok(const char *s, size_t len, int utf8)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f || (c >= 0x80 && !utf8))
            return 0;
    }
    return !utf8 || smtp_utf8_valid((const unsigned char *)s, len);
}

int smtp_helo_valid(const char *s, size_t len)
{
    if (len == 0 || len > 255)
        return 0;
    if (s[0] == '[') {
        cursor c = {.p = (const unsigned char *)s, .i = 0, .len = len};
        return parse_address_literal(&c) == 0 && c.i == len;
    }
    /* A domain; "_" is tolerated (it is common in host names that never were DNS names). */
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (is_letdig(c) || c == '-' || c == '_' || c >= 0x80) {
            label++;
        } else {
            return 0;
        }
    }
    return smtp_utf8_valid((const unsigned char *)s, len);
}

int smtp_parse_size(const char *s, size_t len, uint64_t *size_r)
{
    if (len == 0 || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            v = UINT64_MAX;
        else
            v = v * 10 + d;
    }
    *size_r = v;
    return 0;
}
