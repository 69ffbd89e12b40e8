/* Strict base64: see b64.h. */
#include "b64.h"

#include <stdint.h>

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int mpc_b64_value(unsigned char c, char last)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == (unsigned char)last)
        return 63;
    return -1;
}

size_t mpc_b64_encoded_len(size_t len)
{
    return (len + 2) / 3 * 4;
}

size_t mpc_b64_encode_to(const void *data, size_t len, char *out)
{
    const unsigned char *in = data;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_alphabet[v >> 18 & 63];
        out[o++] = b64_alphabet[v >> 12 & 63];
        out[o++] = b64_alphabet[v >> 6 & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

char *mpc_b64_encode(apr_pool_t *pool, const void *data, size_t len)
{
    char *out = apr_palloc(pool, mpc_b64_encoded_len(len) + 1);
    mpc_b64_encode_to(data, len, out);
    return out;
}

int mpc_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    *out_len = 0;
    if (len % 4 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 4) {
        int last = i + 4 == len;
        int v[4];
        size_t pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=') {
                /* padding: only in the last quantum, only in its last two places, and only at the end */
                if (!last || k < 2)
                    return -1;
                v[k] = 0;
                pad++;
            } else {
                if (pad)
                    return -1; /* "QQ=A" */
                v[k] = mpc_b64_value(s[i + k], '/');
                if (v[k] < 0)
                    return -1;
            }
        }
        uint32_t q = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(q >> 16);
        if (pad == 2) {
            if (q & 0xffff) /* bits that no byte uses must be zero: one canonical encoding only */
                return -1;
        } else if (pad == 1) {
            if (q & 0xff)
                return -1;
            out[o++] = (unsigned char)(q >> 8);
        } else {
            out[o++] = (unsigned char)(q >> 8);
            out[o++] = (unsigned char)q;
        }
    }
    *out_len = o;
    return 0;
}
