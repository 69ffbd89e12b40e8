/*
 * IMAP modified UTF-7 (RFC 3501 section 5.1.3) <-> UTF-8, for mailbox names.
 *
 * Modified UTF-7: printable US-ASCII 0x20-0x7e stands for itself, except "&" which is written "&-";
 * everything else is UTF-16 in a modified BASE64 (alphabet A-Z a-z 0-9 + and "," instead of "/"), opened
 * by "&" and closed by "-". Both functions take an explicit length, so a NUL inside the input is seen and
 * refused, and both accept only the one canonical form: decoding then encoding gives the input back.
 */
#ifndef MPC_UTF7_H
#define MPC_UTF7_H

#include <stddef.h>
#include <apr_pools.h>

/*
 * UTF-8 -> modified UTF-7. Returns 0 and a NUL-terminated string from `pool` in *out_r (its length in
 * *out_len_r when not NULL), or -1 when `in` is not valid UTF-8: a NUL, a stray or missing continuation
 * byte, an overlong form, a surrogate (U+D800-U+DFFF) or a code point above U+10FFFF.
 */
int mpc_utf8_to_mutf7(const char *in, size_t len, apr_pool_t *pool, char **out_r, size_t *out_len_r);

/*
 * Modified UTF-7 -> UTF-8. Returns 0 and a NUL-terminated string from `pool` in *out_r (length in
 * *out_len_r when not NULL), or -1 for anything RFC 3501 does not allow or that is not canonical: a byte
 * outside 0x20-0x7e, "&" without its closing "-", a character outside the modified BASE64 alphabet, a
 * shifted run that encodes printable US-ASCII, NUL, nothing ("&" "-" is only "&"), leftover bits that are
 * not zero or make a whole BASE64 character, an unpaired surrogate, or two shifted runs back to back.
 */
int mpc_mutf7_to_utf8(const char *in, size_t len, apr_pool_t *pool, char **out_r, size_t *out_len_r);

#endif
