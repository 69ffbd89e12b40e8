/*
 * A lean FIFO worker pool. It replaces apr_thread_pool, whose priority queue, task records and
 * per-push bookkeeping cost more than the work of a typical job (a cached user lookup): every SMTP
 * message takes two jobs. A push wakes a thread only when one is idle (a busy pool takes the task on its
 * next round without any system call).
 */
#include <stdlib.h>

#include <apr_thread_cond.h>
#include <apr_thread_mutex.h>
#include <apr_thread_proc.h>

#include "workers.h"

struct mph_workers {
    apr_thread_mutex_t *mutex;
    apr_thread_cond_t *cond;
    mph_task *head, *tail;
    unsigned idle;                  /* threads waiting on cond */
    int stopping;
    unsigned n;
    apr_thread_t **threads;
};

static void *APR_THREAD_FUNC worker_main(apr_thread_t *thread, void *data)
{
    (void)thread;
    mph_workers *w = data;
    apr_thread_mutex_lock(w->mutex);
    for (;;) {
        while (!w->head && !w->stopping) {
            w->idle++;
            apr_thread_cond_wait(w->cond, w->mutex);
            w->idle--;
        }
        if (w->stopping)
            break;
        mph_task *t = w->head;
        w->head = t->next;
        if (!w->head)
            w->tail = NULL;
        apr_thread_mutex_unlock(w->mutex);
        t->next = NULL;
        t->run(t);
        apr_thread_mutex_lock(w->mutex);
    }
    apr_thread_mutex_unlock(w->mutex);
    return NULL; /* not apr_thread_exit(): pthread_exit's unwinding confuses AddressSanitizer */
}

static apr_status_t workers_cleanup(void *data)
{
    mph_workers_stop(data);
    return APR_SUCCESS;
}

apr_status_t mph_workers_start(mph_workers **w_r, unsigned n, apr_pool_t *pool)
{
    apr_status_t rv;
    mph_workers *w = apr_pcalloc(pool, sizeof *w);
    if (n < 1)
        n = 1;
    w->threads = apr_pcalloc(pool, n * sizeof *w->threads);
    if ((rv = apr_thread_mutex_create(&w->mutex, APR_THREAD_MUTEX_DEFAULT, pool)) != APR_SUCCESS ||
        (rv = apr_thread_cond_create(&w->cond, pool)) != APR_SUCCESS)
        return rv;
    /* If the pool goes first, the threads stop before their mutex and condition do (a pre-cleanup runs
       before the subpools and the plain cleanups). */
    apr_pool_pre_cleanup_register(pool, w, workers_cleanup);
    for (; w->n < n; w->n++)
        if ((rv = apr_thread_create(&w->threads[w->n], NULL, worker_main, w, pool)) != APR_SUCCESS) {
            mph_workers_stop(w);
            return rv;
        }
    *w_r = w;
    return APR_SUCCESS;
}

apr_status_t mph_workers_push(mph_workers *w, mph_task *task)
{
    task->next = NULL;
    apr_thread_mutex_lock(w->mutex);
    if (w->stopping) {
        apr_thread_mutex_unlock(w->mutex);
        return APR_EINVAL;
    }
    if (w->tail)
        w->tail->next = task;
    else
        w->head = task;
    w->tail = task;
    if (w->idle)
        apr_thread_cond_signal(w->cond);
    apr_thread_mutex_unlock(w->mutex);
    return APR_SUCCESS;
}

unsigned mph_workers_stop(mph_workers *w)
{
    apr_thread_mutex_lock(w->mutex);
    w->stopping = 1;
    apr_thread_cond_broadcast(w->cond);
    unsigned left = 0;
    for (mph_task *t = w->head; t; t = t->next)
        left++;
    apr_thread_mutex_unlock(w->mutex);
    for (unsigned i = 0; i < w->n; i++) {
        apr_status_t trv;
        apr_thread_join(&trv, w->threads[i]);
    }
    w->n = 0;
    return left;
}
