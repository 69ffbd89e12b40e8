/*
 * The blocking-work threads: a fixed set started once, one FIFO of tasks. Sessions hand them what may
 * block (a user lookup, an fsync); the result goes back to the session's loop as a message.
 */
#ifndef MPH_WORKERS_H
#define MPH_WORKERS_H

#include <apr_pools.h>

typedef struct mph_task mph_task;
struct mph_task {
    mph_task *next;                 /* the queue's link; the owner leaves it alone */
    void (*run)(mph_task *task);
};

typedef struct mph_workers mph_workers;

/* Starts n threads (n >= 1), allocated in pool. */
apr_status_t mph_workers_start(mph_workers **w_r, unsigned n, apr_pool_t *pool);
/* Queues a task; returns APR_SUCCESS, or APR_EINVAL once the workers are stopping. */
apr_status_t mph_workers_push(mph_workers *w, mph_task *task);
/* Waits for the tasks under way to end and joins the threads; tasks still queued are not run (their
   sessions are gone by then). Returns how many were left. Idempotent; destroying the pool does it too. */
unsigned mph_workers_stop(mph_workers *w);

#endif
