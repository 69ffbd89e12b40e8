/* TLS contexts (host internal): OpenSSL 3, TLS 1.2 minimum, server cipher preference. */
#ifndef MPH_TLS_H
#define MPH_TLS_H

#include <apr_pools.h>
#include <openssl/ssl.h>

/* Loads a certificate chain and key into a new server context. Returns NULL and sets *ctx_r, or an error
   message (allocated in pool) naming the file. The caller frees the context with SSL_CTX_free. */
const char *mph_tls_context(apr_pool_t *pool, const char *cert_file, const char *key_file, SSL_CTX **ctx_r);

/* Writes a new self-signed certificate (EC P-256, `days` long) for `cn` and its key (mode 0600). */
const char *mph_tls_self_signed(apr_pool_t *pool, const char *cn, int days, const char *cert_file,
                                const char *key_file);

/* The last OpenSSL error as text, and clears the queue. */
const char *mph_tls_error(apr_pool_t *pool);

#endif
