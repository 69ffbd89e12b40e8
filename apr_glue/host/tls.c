#include "tls.h"

#include <stdio.h>
#include <sys/stat.h>

#include <apr_strings.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

const char *mph_tls_error(apr_pool_t *pool)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!e)
        return "unknown TLS error";
    ERR_error_string_n(e, buf, sizeof buf);
    return apr_pstrdup(pool, buf);
}

const char *mph_tls_context(apr_pool_t *pool, const char *cert_file, const char *key_file, SSL_CTX **ctx_r)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return apr_psprintf(pool, "cannot create TLS context: %s", mph_tls_error(pool));
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle sessions hold no TLS buffers (DESIGN section 3: memory per idle session). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"mailproto", 9);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        const char *e = mph_tls_error(pool);
        SSL_CTX_free(ctx);
        return apr_psprintf(pool, "%s: cannot load certificate: %s", cert_file, e);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        const char *e = mph_tls_error(pool);
        SSL_CTX_free(ctx);
        return apr_psprintf(pool, "%s: cannot load private key: %s", key_file, e);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return apr_psprintf(pool, "%s: private key does not match certificate %s", key_file, cert_file);
    }
    *ctx_r = ctx;
    return NULL;
}

const char *mph_tls_self_signed(apr_pool_t *pool, const char *cn, int days, const char *cert_file,
                                const char *key_file)
{
    const char *err = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f = NULL;
    if (!key || !x) {
        err = "cannot generate a key";
        goto out;
    }
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(apr_time_now() & 0x7fffffff));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name,
                                              apr_psprintf(pool, "DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1", cn));
    if (ext) {
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (!X509_sign(x, key, EVP_sha256())) {
        err = apr_psprintf(pool, "cannot sign certificate: %s", mph_tls_error(pool));
        goto out;
    }
    mode_t old = umask(077);
    f = fopen(key_file, "w");
    umask(old);
    if (!f || !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) {
        err = apr_psprintf(pool, "%s: cannot write key", key_file);
        goto out;
    }
    fclose(f);
    f = fopen(cert_file, "w");
    if (!f || !PEM_write_X509(f, x)) {
        err = apr_psprintf(pool, "%s: cannot write certificate", cert_file);
        goto out;
    }
out:
    if (f)
        fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
    return err;
}
