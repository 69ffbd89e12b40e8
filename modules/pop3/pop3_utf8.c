/*
 * RFC 6856, POP3 Support for UTF-8: the UTF8 command and the LANG command.
 *
 * UTF8 (section 2.1) switches the session to UTF-8 mode. It is valid in the AUTHORIZATION state only
 * (section 2: "Commands valid in states: AUTHORIZATION"; dispatch refuses it after login) and has no
 * parameters. What the mode changes:
 *  - RETR and TOP (section 2.1): outside UTF-8 mode "character strings outside the ASCII repertoire MUST
 *    NOT be sent to the client as is"; for a message that needs the mode the server either sends a
 *    surrogate or fails the request with -ERR, and sections 4 and 5 give the failure a response code,
 *    "-ERR [UTF8]". We send a surrogate, its 8-bit header bytes as "?" (pop3_retr.c says why, and how
 *    it stays cheap); in UTF-8 mode messages are sent as stored.
 *  - USER, PASS and APOP (section 2.2, the "UTF8 USER" capability): in UTF-8 mode a user name or password
 *    that is not well-formed UTF-8 (RFC 3629) is refused, as section 2.2 requires ("The server MUST reject
 *    UTF-8 usernames or passwords that fail to comply with the formal syntax in UTF-8"). Before UTF8 the
 *    bytes go to the user database unchanged, as they always did: section 2.2 lets a client send UTF-8
 *    credentials before UTF8, and a legacy client's Latin-1 password keeps working.
 *  - STLS after UTF8 is refused (section 2.1: clients MUST NOT issue it, servers MAY enforce that with an
 *    -ERR without a response code), so the mode never has to survive RFC 2595's reset.
 * A second UTF8 is answered +OK: the mode asked for is the mode in force (section 2.1 only allows an -ERR
 * to UTF8, it does not ask for one).
 *
 * SASLprep (RFC 4013), which section 2.2 says servers advertising "UTF8 USER" SHOULD apply to USER and PASS
 * arguments, is not applied: the user database compares bytes, as it does for SASL PLAIN in SMTP and POP3
 * (modules/common/sasl.h). For ASCII credentials SASLprep is the identity; non-ASCII ones match when the
 * client and the passwd-file use the same normalization (in practice NFC). Appendix A explains why the
 * "UTF8 USER" capability is optional at all: SASLprep's burden.
 *
 * LANG (section 3) negotiates the language of human-readable response text. This server has one: "en",
 * also the administrator's preferred language that "LANG *" selects (section 3.2). The responses follow
 * section 3.2 and its examples (section 3.3):
 *   LANG            +OK Language listing follows / en English / .   (tag SP description, in the language)
 *   LANG en-US      +OK en Responses will be in English             (+OK SP exact tag selected SP text)
 *   LANG *          the same
 *   LANG de         -ERR Language de is not supported               (the current language stays)
 * The argument is an RFC 4647 basic language range (section 2.1 there: "*" or 1*8ALPHA *("-" 1*8alphanum));
 * it is matched by RFC 4647 section 3.4 lookup, which truncates the range from the end ("en-GB-oxendict",
 * "en-GB", "en") until a supported tag matches, so every English variant gets English. A malformed range
 * is a syntax error.
 */
#include <string.h>
#include <strings.h>

#include "pop3.h"

/* The languages of response text (RFC 6856 section 3.2 language listings: tag, then a description in the
   language itself). The first one is the default and what "LANG *" selects. */
static const struct {
    const char *tag, *description, *selected;
} languages[] = {
    {"en", "English", "Responses will be in English"},
};

/* ---------------------------------------------------------------- UTF8 */

void pop3_cmd_utf8(mp_session *s, const pop3_command *c)
{
    pop3_session *ps = s->state;
    /* RFC 6856 section 2.1: "The "UTF8" command has no parameters." */
    if (c->nargs || c->too_many_args) {
        pop3_err(s, "Too many arguments");
        s->host->error(s);
        return;
    }
    if (ps->utf8) {
        pop3_ok(s, "UTF8 already enabled");
        return;
    }
    ps->utf8 = 1;
    s->host->log(s, MP_LOG_DEBUG, 40401, "UTF-8 mode enabled");
    pop3_ok(s, "UTF8 enabled");
}

/* ---------------------------------------------------------------- LANG */

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int is_alnum(char c)
{
    return is_alpha(c) || (c >= '0' && c <= '9');
}

/* RFC 4647 section 2.1: basic-language-range = (1*8ALPHA *("-" 1*8alphanum)) / "*" */
static int basic_range_ok(const char *p, size_t len)
{
    if (len == 1 && p[0] == '*')
        return 1;
    size_t i = 0;
    int first = 1;
    for (;;) {
        size_t start = i;
        while (i < len && (first ? is_alpha(p[i]) : is_alnum(p[i])))
            i++;
        if (i == start || i - start > 8)
            return 0;
        if (i == len)
            return 1;
        if (p[i] != '-')
            return 0;
        i++;
        first = 0;
    }
}

/* RFC 4647 section 3.4 lookup of one range among our tags: the index of the language, or -1. "*" selects
   the default (RFC 6856 section 3.2: "a language designated as preferred by the server administrator"). */
static int lookup(const char *p, size_t len)
{
    if (len == 1 && p[0] == '*')
        return 0;
    for (;;) {
        for (int k = 0; k < (int)(sizeof languages / sizeof languages[0]); k++)
            if (strlen(languages[k].tag) == len && strncasecmp(languages[k].tag, p, len) == 0)
                return k;
        /* truncate the last subtag; a single-character subtag (an extension or private-use singleton) left
           at the end goes with it */
        const char *dash = memrchr(p, '-', len);
        if (!dash)
            return -1;
        len = (size_t)(dash - p);
        if (len >= 2 && p[len - 2] == '-')
            len -= 2;
    }
}

void pop3_cmd_lang(mp_session *s, const pop3_command *c)
{
    const mp_host *h = s->host;
    if (c->nargs > 1 || c->too_many_args) {
        pop3_err(s, "Too many arguments");
        h->error(s);
        return;
    }
    if (c->nargs == 0) {
        /* RFC 6856 section 3.2: the language listings, one per line, in a multi-line response */
        h->printf(s, "+OK Language listing follows\r\n");
        for (size_t k = 0; k < sizeof languages / sizeof languages[0]; k++)
            h->printf(s, "%s %s\r\n", languages[k].tag, languages[k].description);
        h->printf(s, ".\r\n");
        return;
    }
    const pop3_slice *a = &c->args[0];
    if (!basic_range_ok(a->p, a->len)) {
        pop3_err(s, "Invalid language range");
        h->error(s);
        return;
    }
    int k = lookup(a->p, a->len);
    if (k < 0) {
        /* RFC 6856 section 3.2: -ERR, and the language previously used stays. The range is letters, digits
           and "-" (checked above): safe to echo, as section 3.3's "-ERR invalid language MUL" does. */
        pop3_err(s, "Language %.*s is not supported", (int)a->len, a->p);
        return;
    }
    /* RFC 6856 section 3.2: "+OK", a space, the exact language tag selected, a space, text in that language */
    pop3_ok(s, "%s %s", languages[k].tag, languages[k].selected);
}
