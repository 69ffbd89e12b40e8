/*
 * Module loading and generations (host internal).
 *
 * Every load of a module file is a generation. glibc's dlopen() hands back the already-loaded object for a
 * path it has seen, so each generation is loaded from a private copy of the file (in StateDir/modules/),
 * which is unlinked right after dlopen(). A generation is unloaded when nothing refers to it any more.
 */
#ifndef MPH_LOADER_H
#define MPH_LOADER_H

#include <apr_pools.h>
#include <apr_dso.h>
#include <apr_file_info.h>
#include <mailproto/host.h>

typedef struct mph_generation {
    const char *name;         /* LoadModule name */
    const char *file;         /* the configured file */
    unsigned number;          /* 1, 2, ... per name over the server's life */
    const mp_module *module;
    apr_dso_handle_t *dso;    /* NULL for a module linked into the host (tests) */
    apr_pool_t *pool;         /* the generation's pool */
    void *ctx;                /* from module->init */
    int inited;
    apr_ino_t inode;          /* identity of the file when loaded: a change means a new generation */
    apr_time_t mtime;
    apr_off_t size;
    volatile apr_uint32_t refs;     /* configuration snapshots that list it */
    volatile apr_uint32_t sessions; /* open sessions that use it */
} mph_generation;

/*
 * Checks a descriptor as the loader does. Returns NULL, or "PATH: message": wrong magic, different
 * ABI major, struct_size too small for the fields this host reads, no name, unknown kind, a protocol
 * module without protocol callbacks, a provider without provider.
 */
const char *mph_module_check(apr_pool_t *pool, const mp_module *m, const char *path);

/*
 * Loads `path` as generation `number` of module `name`: copies it into copy_dir (which must exist),
 * dlopens the copy, finds MP_MODULE_SYMBOL, checks it, and checks that its name equals `name`.
 * Does not call init. Returns NULL and sets *gen_r, or "PATH: message" (file missing, not a shared object,
 * not a mailproto module: no MP_MODULE_SYMBOL, and the mph_module_check messages).
 */
const char *mph_module_load(apr_pool_t *pool, const char *name, const char *path, const char *copy_dir,
                            unsigned number, mph_generation **gen_r);

/* 1 when the file at gen->file is no longer the one gen was loaded from (inode, size or mtime). */
int mph_module_changed(const mph_generation *gen);

/* Calls fini (when inited), unloads the object and destroys the generation's pool. */
void mph_module_unload(mph_generation *gen);

#endif
