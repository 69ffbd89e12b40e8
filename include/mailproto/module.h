/*
 * mailproto module ABI: the descriptor every module exports.
 *
 * A module is a shared object that exports exactly one symbol, MP_MODULE_SYMBOL, a `const mp_module`.
 * Build it with -fvisibility=hidden (and -Wl,-Bsymbolic) and declare the descriptor with MP_MODULE(),
 * which gives that one symbol default visibility. A module links against no symbol of the host: everything
 * it needs from the host comes through the `const mp_host *` table (host.h) it receives in init().
 *
 * Compatibility rules (httpd's MODULE_MAGIC_NUMBER rules):
 *  - the first seven fields of mp_module never move or change meaning;
 *  - the loader refuses a wrong magic and a different abi_major;
 *  - a module with a newer abi_minor is accepted if struct_size covers every field the host reads;
 *  - fields are only ever added at the end (the reserved slots shrink), and minor grows with them.
 */
#ifndef MAILPROTO_MODULE_H
#define MAILPROTO_MODULE_H

#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MP_MODULE_MAGIC 0x4d50524fu /* "MPRO" */
#define MP_ABI_MAJOR 1
#define MP_ABI_MINOR 0

/* The name of the one exported symbol. */
#define MP_MODULE_SYMBOL "mp_module_descriptor"

/* True when a module (or host) built against abi_minor `minor` has everything minor `m` added. */
#define MP_ABI_AT_LEAST(major, minor, m) ((major) == MP_ABI_MAJOR && (minor) >= (m))

typedef struct mp_host mp_host;
typedef struct mp_protocol mp_protocol;
typedef struct mp_provider mp_provider;
typedef struct mp_directive mp_directive;

typedef enum mp_module_kind {
    MP_KIND_PROTOCOL = 1, /* a protocol handler: `protocol` is set */
    MP_KIND_PROVIDER = 2  /* a service provider (store, auth, ...): `provider` is set */
} mp_module_kind;

/* Where a configuration directive may appear. */
enum {
    MP_SCOPE_GLOBAL = 1, /* outside any <Listen> block */
    MP_SCOPE_LISTEN = 2  /* inside a <Listen> block */
};

/*
 * A configuration directive a module adds to the configuration file. The host stores every value as the
 * text after the directive name; handlers read it with host->config(). `check` validates the value when
 * the configuration is loaded (also on reload and with -t): it returns NULL, or an error message the host
 * prints as "FILE:LINE: message". A directive list ends with an entry whose name is NULL.
 */
struct mp_directive {
    const char *name;   /* as written in the file, matched case-insensitively */
    unsigned scope;     /* MP_SCOPE_GLOBAL and/or MP_SCOPE_LISTEN */
    const char *(*check)(const char *value, apr_pool_t *pool);
    const char *help;   /* one line for the configuration reference */
};

typedef struct mp_module {
    /* ---- fixed forever ---- */
    uint32_t magic;        /* MP_MODULE_MAGIC */
    uint16_t abi_major;    /* MP_ABI_MAJOR the module was built against */
    uint16_t abi_minor;    /* MP_ABI_MINOR the module was built against */
    uint32_t struct_size;  /* sizeof(mp_module) the module was built with */
    const char *name;      /* short name, e.g. "smtp"; matches the LoadModule name */
    uint32_t kind;         /* mp_module_kind */
    const char *version;   /* the module's own version, free text */
    /* ---- ABI 1.0 ---- */
    const char *description;
    /*
     * Called once per loaded generation, on the host's main thread, before any session. `pool` lives as long
     * as the generation. Put whatever the module needs into *ctx_r; sessions see it as session->module_ctx.
     * Return 0, or non-zero to refuse loading (log why with host->log first). May be NULL.
     */
    int (*init)(const mp_host *host, apr_pool_t *pool, void **ctx_r);
    /* Called once when the generation is unloaded: no session, timer or job refers to it any more. */
    void (*fini)(void *ctx);
    const mp_directive *directives;  /* may be NULL */
    const mp_protocol *protocol;     /* MP_KIND_PROTOCOL */
    const mp_provider *provider;     /* MP_KIND_PROVIDER */
    void *reserved[8];               /* zero; for fields added in later minors */
} mp_module;

#if defined(__GNUC__)
#define MP_EXPORT __attribute__((visibility("default")))
#else
#define MP_EXPORT
#endif

/* Opens a module's descriptor: MP_MODULE { .name = "echo", ... }; */
#define MP_MODULE MP_EXPORT extern const mp_module mp_module_descriptor; \
    MP_EXPORT const mp_module mp_module_descriptor =

/* Fills the fixed header; use first inside the MP_MODULE initializer. */
#define MP_MODULE_HEADER \
    .magic = MP_MODULE_MAGIC, .abi_major = MP_ABI_MAJOR, .abi_minor = MP_ABI_MINOR, \
    .struct_size = (uint32_t)sizeof(mp_module)

/*
 * Makes an instance of a provider from the text of a directive after "NAME:" (MailStore maildir:SPEC):
 * relative paths in SPEC resolve against base_dir. Returns 0 and sets *instance_r (the kind's own instance
 * type), or non-zero and sets *err_r. Every provider's iface table starts with this function, so the host
 * can make and keep instances of any kind (host->provider_instance).
 */
typedef int (*mp_instance_fn)(const char *spec, const char *base_dir, apr_pool_t *pool, void **instance_r,
                              const char **err_r);

/*
 * A provider: a service that handlers look up by kind and name through host->provider() (the
 * ap_register_provider idea). `iface` points to a kind-specific table of functions (store.h, auth.h);
 * `iface_version` lets the caller check it understands that table.
 */
struct mp_provider {
    const char *kind;        /* "store", "auth", ... */
    const char *name;        /* "maildir", "passwd-file", ... */
    uint32_t iface_version;
    const void *iface;
};

#ifdef __cplusplus
}
#endif

#include <mailproto/protocol.h>

#endif
