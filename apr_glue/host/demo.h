/* The embedded default configuration: what `mailprotod` runs with no -c (README quick start). */
#ifndef MPH_DEMO_H
#define MPH_DEMO_H

#include <apr_pools.h>

/* Creates DIR (default ./mailproto-demo) with a configuration for every built handler on the eight
   standard ports of loopback (shifted by 10000 when not root), a self-signed certificate, a demo user
   and a mail folder. Sets *conf_r to the configuration file. Returns NULL or an error. */
const char *mph_demo_prepare(apr_pool_t *pool, const char *argv0, const char *dir, const char **conf_r);

#endif
