/* Strict UTF-8 (RFC 3629): see utf8.h. */
#include "utf8.h"

int32_t mpc_utf8_next(const unsigned char *in, size_t len, size_t *i)
{
    unsigned char c = in[*i];
    int32_t cp, min;
    size_t n;
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3, cp = c & 0x07, min = 0x10000;
    } else {
        return -1; /* continuation byte, 0xc0/0xc1 (always overlong) or 0xf5+ */
    }
    if (len - *i <= n)
        return -1;
    for (size_t k = 1; k <= n; k++) {
        unsigned char cc = in[*i + k];
        if ((cc & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *i += n + 1;
    return cp;
}

int mpc_utf8_valid(const void *s, size_t len)
{
    const unsigned char *p = s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) { /* ASCII runs without the call */
            i++;
            continue;
        }
        if (mpc_utf8_next(p, len, &i) < 0)
            return 0;
    }
    return 1;
}
