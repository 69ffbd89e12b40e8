/*
 * Strict base64 (RFC 4648 section 4, the standard alphabet with '=' padding) for SASL exchanges and
 * stored credentials (modules/common, linked into each module).
 *
 * apr_base64_decode() is lenient: it stops at the first character outside the alphabet and ignores
 * what follows, so "QQ==garbage" decodes. A SASL server must refuse such input (RFC 4954 section 4:
 * a response that is not valid base64 is an error), so the decoder here accepts exactly the canonical
 * encoding: a length that is a multiple of 4, only alphabet characters, '=' only as the last one or two
 * characters, no whitespace anywhere, and zero bits in the unused part of the last quantum.
 */
#ifndef MPC_B64_H
#define MPC_B64_H

#include <stddef.h>
#include <apr_pools.h>

/* The largest number of bytes `len` base64 characters can decode to. */
#define MPC_B64_DECODED_MAX(len) (((len) / 4) * 3)

/* The number of characters (without NUL) the encoding of `len` bytes takes. */
/* The 6-bit value of a base64 character, or -1. `last` is the 63rd character: '/' in base64 (RFC 4648),
   ',' in IMAP's modified UTF-7 (RFC 3501 section 5.1.3). */
int mpc_b64_value(unsigned char c, char last);

size_t mpc_b64_encoded_len(size_t len);

/* Encodes data[0..len) into `out`, which has room for mpc_b64_encoded_len(len) + 1 bytes; NUL-terminates.
   Returns the encoded length. */
size_t mpc_b64_encode_to(const void *data, size_t len, char *out);

/* The same, into a NUL-terminated string allocated from `pool`. */
char *mpc_b64_encode(apr_pool_t *pool, const void *data, size_t len);

/*
 * Decodes in[0..len) strictly into `out` (room for MPC_B64_DECODED_MAX(len) bytes). Returns 0 and sets
 * *out_len, or -1 when the input is not canonical base64 (out may then hold partial data: wipe it if the
 * input was secret). An empty input decodes to zero bytes.
 */
int mpc_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);

#endif
