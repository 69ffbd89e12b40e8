/* IMAP modified UTF-7 (RFC 3501 section 5.1.3): see utf7.h. */
#include "utf7.h"
#include "b64.h"
#include "utf8.h"

#include <stdint.h>
#include <string.h>

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";



static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

int mpc_utf8_to_mutf7(const char *in, size_t len, apr_pool_t *pool, char **out_r, size_t *out_len_r)
{
    const unsigned char *u = (const unsigned char *)in;
    /* Worst case: a control character between ASCII ones becomes "&AAE-" (5 bytes for 1, 6 for 2). */
    if (len > (size_t)-1 / 4)
        return -1;
    char *out = apr_palloc(pool, len * 3 + 8), *o = out;
    uint32_t bits = 0;
    unsigned nbits = 0;
    int shifted = 0;
    size_t i = 0;

    while (i < len) {
        int32_t cp = mpc_utf8_next(u, len, &i);
        if (cp <= 0)
            return -1; /* invalid, or NUL */
        if (cp >= 0x20 && cp <= 0x7e) {
            if (shifted) {
                if (nbits)
                    *o++ = b64_chars[(bits << (6 - nbits)) & 0x3f];
                *o++ = '-';
                shifted = 0, bits = 0, nbits = 0;
            }
            *o++ = (char)cp;
            if (cp == '&')
                *o++ = '-';
            continue;
        }
        if (!shifted) {
            *o++ = '&';
            shifted = 1;
        }
        uint16_t units[2];
        int nunits = 1;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            units[0] = (uint16_t)(0xd800 | (cp >> 10));
            units[1] = (uint16_t)(0xdc00 | (cp & 0x3ff));
            nunits = 2;
        } else {
            units[0] = (uint16_t)cp;
        }
        for (int k = 0; k < nunits; k++) {
            bits = (bits << 16) | units[k];
            nbits += 16;
            while (nbits >= 6) {
                nbits -= 6;
                *o++ = b64_chars[(bits >> nbits) & 0x3f];
            }
            bits &= (1u << nbits) - 1;
        }
    }
    if (shifted) {
        if (nbits)
            *o++ = b64_chars[(bits << (6 - nbits)) & 0x3f];
        *o++ = '-';
    }
    *o = '\0';
    *out_r = out;
    if (out_len_r)
        *out_len_r = (size_t)(o - out);
    return 0;
}

int mpc_mutf7_to_utf8(const char *in, size_t len, apr_pool_t *pool, char **out_r, size_t *out_len_r)
{
    const unsigned char *u = (const unsigned char *)in;
    /* 8 BASE64 characters carry 3 UTF-16 units: at most 9 bytes of UTF-8. */
    if (len > (size_t)-1 / 4)
        return -1;
    char *out = apr_palloc(pool, len * 2 + 4), *o = out;
    int after_shift = 0; /* the previous byte closed a shifted run */
    size_t i = 0;

    while (i < len) {
        unsigned char c = u[i];
        if (c < 0x20 || c > 0x7e)
            return -1;
        if (c != '&') {
            *o++ = (char)c;
            i++;
            after_shift = 0;
            continue;
        }
        if (i + 1 < len && u[i + 1] == '-') {
            *o++ = '&';
            i += 2;
            after_shift = 0;
            continue;
        }
        if (after_shift)
            return -1; /* "&..-&..-": one run must encode both (canonical form) */
        i++;
        uint32_t bits = 0, high = 0;
        unsigned nbits = 0, nunits = 0;
        for (;;) {
            if (i >= len)
                return -1; /* a name MUST end in US-ASCII */
            c = u[i++];
            if (c == '-')
                break;
            int v = mpc_b64_value(c, ',');
            if (v < 0)
                return -1;
            bits = (bits << 6) | (uint32_t)v;
            nbits += 6;
            if (nbits < 16)
                continue;
            nbits -= 16;
            uint32_t unit = (bits >> nbits) & 0xffff;
            bits &= (1u << nbits) - 1;
            nunits++;
            uint32_t cp;
            if (high) {
                if (unit < 0xdc00 || unit > 0xdfff)
                    return -1;
                cp = 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00);
                high = 0;
            } else if (unit >= 0xd800 && unit <= 0xdbff) {
                high = unit;
                continue;
            } else if (unit >= 0xdc00 && unit <= 0xdfff) {
                return -1;
            } else {
                cp = unit;
            }
            if (cp == 0 || (cp >= 0x20 && cp <= 0x7e))
                return -1; /* printable US-ASCII MUST represent itself */
            o += utf8_put(o, cp);
        }
        /* Leftover bits: fewer than 6 and all zero, else the run was padded wrongly. */
        if (high || nunits == 0 || nbits >= 6 || bits != 0)
            return -1;
        after_shift = 1;
    }
    *o = '\0';
    *out_r = out;
    if (out_len_r)
        *out_len_r = (size_t)(o - out);
    return 0;
}
