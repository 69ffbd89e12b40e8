/* Module loading and generations: see loader.h. */
#include "loader.h"

#include <apr_atomic.h>
#include <apr_file_io.h>
#include <apr_strings.h>

#include <string.h>
#include <unistd.h>

/* The fields of mp_module this host reads: everything up to and including `provider`. */
#define MPH_MODULE_MIN_SIZE (offsetof(mp_module, provider) + sizeof(((mp_module *)0)->provider))

const char *mph_module_check(apr_pool_t *pool, const mp_module *m, const char *path)
{
    if (m->magic != MP_MODULE_MAGIC)
        return apr_psprintf(pool, "%s: not a mailproto module (bad magic 0x%08x, expected 0x%08x)", path,
                            (unsigned)m->magic, (unsigned)MP_MODULE_MAGIC);
    if (m->abi_major != MP_ABI_MAJOR)
        return apr_psprintf(pool, "%s: built for mailproto ABI major %u, this host has ABI major %u: rebuild it",
                            path, (unsigned)m->abi_major, (unsigned)MP_ABI_MAJOR);
    if (m->struct_size < MPH_MODULE_MIN_SIZE)
        return apr_psprintf(pool, "%s: module descriptor too small (%u bytes, this host needs %u)", path,
                            (unsigned)m->struct_size, (unsigned)MPH_MODULE_MIN_SIZE);
    if (!m->name || !*m->name)
        return apr_psprintf(pool, "%s: module descriptor has no name", path);
    if (m->kind == MP_KIND_PROTOCOL) {
        const mp_protocol *p = m->protocol;
        if (!p || !p->name || !p->on_connect || !p->on_input || !p->on_goodbye)
            return apr_psprintf(pool, "%s: protocol module '%s' lacks its protocol callbacks "
                                "(name, on_connect, on_input, on_goodbye)", path, m->name);
    } else if (m->kind == MP_KIND_PROVIDER) {
        const mp_provider *p = m->provider;
        if (!p || !p->kind || !p->name || !p->iface)
            return apr_psprintf(pool, "%s: provider module '%s' lacks its provider descriptor", path, m->name);
    } else {
        return apr_psprintf(pool, "%s: module '%s' has unknown kind %u", path, m->name, (unsigned)m->kind);
    }
    return NULL;
}

static const char *errtext(apr_pool_t *pool, apr_status_t rv)
{
    char buf[256];
    return apr_pstrdup(pool, apr_strerror(rv, buf, sizeof buf));
}

const char *mph_module_load(apr_pool_t *pool, const char *name, const char *path, const char *copy_dir,
                            unsigned number, mph_generation **gen_r)
{
    apr_pool_t *gp;
    apr_finfo_t fi;
    apr_status_t rv;

    if (!*name || strchr(name, '/') || name[0] == '.')
        return apr_psprintf(pool, "%s: bad module name '%s'", path, name);
    if ((rv = apr_stat(&fi, path, APR_FINFO_INODE | APR_FINFO_MTIME | APR_FINFO_SIZE | APR_FINFO_TYPE,
                       pool)) != APR_SUCCESS)
        return apr_psprintf(pool, "%s: cannot load module '%s': %s", path, name, errtext(pool, rv));
    if (fi.filetype != APR_REG)
        return apr_psprintf(pool, "%s: cannot load module '%s': not a regular file", path, name);

    apr_pool_create(&gp, NULL);
    apr_pool_tag(gp, "mph_generation");
    mph_generation *g = apr_pcalloc(gp, sizeof *g);
    g->pool = gp;
    g->name = apr_pstrdup(gp, name);
    g->file = apr_pstrdup(gp, path);
    g->number = number;
    g->inode = fi.inode;
    g->mtime = fi.mtime;
    g->size = fi.size;

    /* A private copy per generation: dlopen() of a path it already has open returns the old object. */
    /* Unique per load, so that no two loads ever share a path that dlopen() might remember. */
    static volatile apr_uint32_t loads;
    const char *copy = apr_psprintf(gp, "%s/%s.%u.%" APR_PID_T_FMT ".%u.so", copy_dir, name, number, getpid(),
                                    apr_atomic_inc32(&loads));
    const char *err = NULL;
    if ((rv = apr_file_copy(path, copy, APR_FPROT_UREAD | APR_FPROT_UWRITE | APR_FPROT_UEXECUTE, gp))
        != APR_SUCCESS) {
        err = apr_psprintf(pool, "%s: cannot copy module to %s: %s", path, copy, errtext(pool, rv));
        goto fail;
    }
    rv = apr_dso_load(&g->dso, copy, gp);
    apr_file_remove(copy, gp); /* the mapping stays; nothing is left behind on disk */
    if (rv != APR_SUCCESS) {
        char buf[512];
        err = apr_psprintf(pool, "%s: cannot load module '%s': %s", path, name,
                           apr_dso_error(g->dso, buf, sizeof buf));
        g->dso = NULL;
        goto fail;
    }
    apr_dso_handle_sym_t sym;
    if (apr_dso_sym(&sym, g->dso, MP_MODULE_SYMBOL) != APR_SUCCESS) {
        err = apr_psprintf(pool, "%s: not a mailproto module (no symbol %s)", path, MP_MODULE_SYMBOL);
        goto fail;
    }
    g->module = (const mp_module *)sym;
    if ((err = mph_module_check(pool, g->module, path)) != NULL)
        goto fail;
    if (strcmp(g->module->name, name) != 0) {
        err = apr_psprintf(pool, "%s: module is named '%s', but LoadModule calls it '%s'", path,
                           g->module->name, name);
        goto fail;
    }
    *gen_r = g;
    return NULL;

fail:
    if (g->dso)
        apr_dso_unload(g->dso);
    apr_pool_destroy(gp);
    return err;
}

int mph_module_changed(const mph_generation *g)
{
    apr_finfo_t fi;
    apr_pool_t *p;
    apr_pool_create(&p, NULL);
    apr_status_t rv = apr_stat(&fi, g->file, APR_FINFO_INODE | APR_FINFO_MTIME | APR_FINFO_SIZE, p);
    apr_pool_destroy(p);
    if (rv != APR_SUCCESS)
        return 0; /* gone: keep what runs; the configuration check reports a missing file */
    return fi.inode != g->inode || fi.mtime != g->mtime || fi.size != g->size;
}

void mph_module_unload(mph_generation *g)
{
    if (g->inited && g->module->fini)
        g->module->fini(g->ctx);
    apr_dso_handle_t *dso = g->dso;
    apr_pool_destroy(g->pool); /* the dso was loaded in this pool: this unloads it */
    (void)dso;
}
