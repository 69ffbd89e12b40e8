/*
 * mailprotod configuration file: parsing and validation (host internal, prefix mph_).
 *
 * httpd style: one directive a line, `#` starts a comment (outside a value's quotes), `<Listen ADDR:PORT>`
 * ... `</Listen>` blocks, directive names case-insensitive. Relative paths resolve against the folder of
 * the configuration file. Every error is one string "FILE:LINE: message".
 *
 * Loading is two steps because modules add directives:
 *   1. mph_conf_parse(): syntax, the core directives, LoadModule lines, <Listen> blocks. Directives it
 *      does not know are kept (with their line) for step 2.
 *   2. mph_conf_resolve(): after the modules are loaded, each kept directive must be one a module declares,
 *      in the right scope, and pass the module's check(); each Protocol must name a loaded protocol module.
 */
#ifndef MPH_CONFIG_H
#define MPH_CONFIG_H

#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_network_io.h>
#include <mailproto/host.h>

typedef struct mph_module_conf {
    const char *name;  /* LoadModule NAME file */
    const char *path;  /* resolved: absolute, or relative to ModuleDir, which is relative to the file */
    int line;
} mph_module_conf;

/* A directive the core parser did not know, kept for mph_conf_resolve(). */
typedef struct mph_extra_directive {
    const char *name;
    const char *value;
    int line;
} mph_extra_directive;

typedef struct mph_listen_conf {
    const char *address;        /* as written: "127.0.0.1:25", "[::1]:143", "*:25" */
    const char *host;           /* "127.0.0.1", "::1", or NULL for any address */
    apr_port_t port;
    int family;                 /* APR_INET, APR_INET6 or APR_UNSPEC (for "*") */
    const char *protocol;       /* Protocol (required) */
    mp_tls_mode tls;            /* TLS (default off) */
    const char *cert_file;      /* TLSCertificateFile inside the block, else NULL (use global) */
    const char *key_file;
    int cert_line, key_line;    /* lines of the block's TLSCertificateFile and KeyFile (0: none) */
    int max_connections;        /* MaxConnections inside the block, else the global value */
    int max_per_client;         /* MaxConnectionsPerClient inside the block, else the global value */
    apr_interval_time_t idle_timeout; /* IdleTimeout inside the block, else the global value */
    int line;                   /* line of <Listen ...> */
    apr_table_t *values;        /* every directive in the block by name (Protocol, TLS, module ones) */
    apr_array_header_t *extra;  /* mph_extra_directive: unknown to the core, for step 2 */
    int protocol_line;          /* line of Protocol (step 2 reports "not a protocol handler" there) */
} mph_listen_conf;

typedef struct mph_conf {
    apr_pool_t *pool;
    const char *file;           /* absolute path of the configuration file (string variant: name in dir) */
    const char *dir;            /* its folder */

    const char *server_name;    /* ServerName (default: the host name) */
    const char *module_dir;     /* ModuleDir, resolved (default: the folder of the file) */
    const char *state_dir;      /* StateDir, resolved (default: "state" next to the file) */
    const char *user;           /* User, or NULL */
    const char *cert_file;      /* TLSCertificateFile, resolved, or NULL */
    const char *key_file;       /* TLSCertificateKeyFile, resolved, or NULL */
    int cert_line, key_line;    /* lines of the global TLSCertificateFile and KeyFile (0: none) */
    const char *log_level;      /* LogLevel error|warn|notice|info|debug (default notice) */
    int threads;                /* Threads (default 0 = one per core) */
    int workers;                /* Workers, blocking-work threads (default 16) */
    apr_size_t max_line;        /* MaxLineLength (default 8192; suffix K/M) */
    int max_errors;             /* MaxErrors (default 10) */
    apr_interval_time_t idle_timeout;     /* IdleTimeout (default 300s; "300", "300s", "5m") */
    apr_interval_time_t shutdown_timeout; /* ShutdownTimeout (default 10s) */
    int max_connections;        /* MaxConnections per listener (default 1000) */
    int max_per_client;         /* MaxConnectionsPerClient per listener (default 50) */
    apr_off_t max_message_size; /* MaxMessageSize (default 50M; suffix K/M/G) */

    apr_array_header_t *modules;   /* mph_module_conf, in file order */
    apr_array_header_t *listeners; /* mph_listen_conf *, in file order */
    apr_table_t *values;           /* every global directive by name (core ones too), for host->config */
    apr_array_header_t *extra;     /* mph_extra_directive: global ones unknown to the core */
} mph_conf;

/*
 * Step 1. Reads and parses `path`. On success returns NULL and sets *conf_r (allocated in pool). On
 * failure returns "FILE:LINE: message" (or "FILE: cannot read: <reason>" when the file cannot be read),
 * where FILE is `path` as given (mph_conf_resolve's messages use it too). The message is allocated in
 * `pool`, so copy it before destroying that pool.
 * Errors include: unknown <block>, missing </Listen> (at the <Listen line), stray </Listen>, directive
 * missing its value, a value that is not valid for a core directive (bad TLS mode, bad number, bad size,
 * bad interval, bad address), duplicate address (the same family, host and port twice), Listen without
 * Protocol, Protocol naming no LoadModule, a LoadModule name given twice, a core global-only directive
 * inside a block or Protocol/TLS outside one, TLS other than off without a certificate and key (global
 * or in the block), a line longer than 8 KiB. Module names (LoadModule, Protocol) are case-sensitive.
 */
const char *mph_conf_parse(apr_pool_t *pool, const char *path, mph_conf **conf_r);

/* Parses the same language from a string; `name` stands for the file name in messages and `dir` is the
   folder relative paths resolve against. */
const char *mph_conf_parse_string(apr_pool_t *pool, const char *name, const char *dir,
                                  const char *text, mph_conf **conf_r);

/* What step 2 needs to know about the loaded modules. */
typedef struct mph_conf_modules {
    void *ctx;
    /* The directive a loaded module declares under this name (case-insensitive), or NULL. */
    const mp_directive *(*find_directive)(void *ctx, const char *name);
    /* 1 if a loaded module named `name` is a protocol handler. */
    int (*is_protocol)(void *ctx, const char *name);
} mph_conf_modules;

/* Step 2. `conf` must come from mph_conf_parse*() (it finds the file name for messages there). Returns
   NULL, or "FILE:LINE: message" for the first problem in file order (unknown directive 'X'; 'X' is not
   allowed inside <Listen>; 'X' is only allowed inside <Listen>; "X: " and the module's check() message;
   module 'X' is not a protocol handler). */
const char *mph_conf_resolve(mph_conf *conf, const mph_conf_modules *mods);

/* Parses "50M"-style sizes (bytes, K, M, G; case-insensitive). Returns 0 or -1. */
int mph_parse_size(const char *text, apr_off_t *bytes_r);
/* Parses "300", "300s", "5m", "1h", "250ms" into microseconds. Returns 0 or -1. */
int mph_parse_interval(const char *text, apr_interval_time_t *usec_r);
/* "off|starttls|required|implicit" (case-insensitive). Returns 0 or -1. */
int mph_parse_tls_mode(const char *text, mp_tls_mode *mode_r);

#endif
