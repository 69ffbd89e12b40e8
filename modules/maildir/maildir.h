/*
 * mod_maildir internals: the Maildir++ store provider (include/mailproto/store.h).
 *
 * On disk (DESIGN section 4; Dovecot reads it and we read Dovecot's):
 *   <root>/new cur tmp              INBOX
 *   <root>/.Work.Projects/...       folder "Work/Projects" (levels joined by ".", names in modified UTF-7)
 *   <folder>/maildirfolder          marker of a folder (Maildir++)
 *   <folder>/dovecot-keywords       keyword letters a..z: lines "N name" (Dovecot's format)
 *   <folder>/mailproto-uidlist      our index: UIDs, MODSEQs, sizes (maildir_index.c)
 *   <root>/subscriptions            Dovecot's subscriptions file
 *   <root>/mailproto-special-use    folders created with a SPECIAL-USE attribute
 * A message file is <base>[:2,<flags>], base "<sec>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<crlf size>".
 *
 * Message ids of this module: 60000-60999.
 */
#ifndef MD_MAILDIR_H
#define MD_MAILDIR_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include <apr_pools.h>
#include <apr_tables.h>
#include <mailproto/host.h>
#include <mailproto/store.h>

#define MD_INDEX_FILE "mailproto-uidlist"
#define MD_INDEX_TMP "mailproto-uidlist.tmp"
#define MD_INDEX_LOCK "mailproto-uidlist.lock"
#define MD_POP3_LOCK "mailproto-pop3.lock"
#define MD_KEYWORDS_FILE "dovecot-keywords"
#define MD_FOLDER_MARKER "maildirfolder"
#define MD_SUBSCRIPTIONS "subscriptions"
#define MD_SPECIAL_USE "mailproto-special-use"
#define MD_UIDVALIDITY "mailproto-uidvalidity"
#define MD_META_LOCK "mailproto-meta.lock"
#define MD_TRASH_PREFIX "..mailproto-deleted."  /* "..": never a valid folder, so never listed */

#define MD_NAME_MAX 255              /* one directory entry: a whole Maildir++ folder name */
#define MD_FOLDER_NAME_MAX 1024      /* a UTF-8 folder name as it crosses the interface */
#define MD_USER_PART_MAX 255
#define MD_USER_MAX 512
#define MD_TMP_MAX_AGE (36 * 3600)   /* Dovecot's: tmp/ files this old are leftovers of a crash */
#define MD_NKEYWORDS 26              /* letters a..z */

/* ---- logging (mod_maildir.c) ---- */
extern const mp_host *md_host; /* from init(): one copy per generation, like every static here */
void md_log(mp_log_level level, int msgid, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

struct mp_store {
    const char *pattern; /* absolute path with %d %n %u %% */
    const char *base;    /* the part of pattern before the first "%": every user lives below it */
    /* realpath(base), found once (user_open runs for every recipient of every message) */
    pthread_mutex_t real_base_mu;
    atomic_int real_base_ok;
    char real_base[PATH_MAX];
};

struct mp_store_user {
    mp_store *store;
    apr_pool_t *pool;
    const char *name;
    const char *root;    /* the user's maildir, a real path inside store->base */
    uint64_t bytes_limit, messages_limit;
};

/* ---- names (maildir_names.c) ---- */
/* "%d" "%n" "%u" expanded for a checked user name: MP_STORE_OK or MP_STORE_BADNAME. */
int md_user_path(const mp_store *st, const char *user, apr_pool_t *pool, const char **path_r);
/* A folder's directory. disk_r: "INBOX" or the Maildir++ name without its leading "." ("Work.Projects").
   MP_STORE_BADNAME for a name the store refuses (store.h). Does not look at the disk. */
int md_folder_resolve(const mp_store_user *u, const char *name, apr_pool_t *pool, const char **dir_r,
                      const char **disk_r);
/* The UTF-8 name of a Maildir++ directory entry (".Work.Projects" without the dot), NULL if it is none. */
const char *md_folder_from_disk(const char *disk, apr_pool_t *pool);
const char *md_disk_dir(const mp_store_user *u, const char *disk, apr_pool_t *pool);
/* An IMAP keyword (RFC 3501 flag-keyword atom) we can store. */
int md_keyword_valid(const char *kw);

/* Message file names: flags in the suffix ":2,<letters>" (letters in ASCII order). */
size_t md_base_len(const char *name);                              /* up to the ":" */
uint32_t md_suffix_flags(const char *suffix, uint32_t *kwmask_r);  /* MP_FLAG_*, keyword letter bits */
char *md_suffix_build(apr_pool_t *pool, const char *old_suffix, uint32_t flags, uint32_t kwmask);
int md_base_field(const char *base, size_t len, char field, uint64_t *value_r); /* ",S=" ",W=" */
/* mp_msg.key: the base name, or a digest of it when it would not be a valid POP3 UIDL. */
const char *md_msg_key(apr_pool_t *pool, const char *base, size_t len);
/* A new unique base name "<sec>.M<usec>P<pid>Q<n>.<host>" (without S= and W=). */
char *md_unique_base(apr_pool_t *pool);

/* ---- files (maildir_fs.c) ---- */
/* 1 when /proc/self/fd can name this process's descriptors (probed once). */
int md_proc_fd_ok(void);
int md_fsync_dir(const char *dir);
/* Group commit: makes durable every entry made in `dir` before the call, like md_fsync_dir, but
   concurrent callers on one directory share fsyncs. A caller joins the directory's open batch; when no
   fsync of that directory is under way, one member (the leader) closes the batch and runs a single
   fsync for all of it while later callers gather in the next batch. Every member gets the result of the
   fsync that covered it: 0, or -1 with errno (logged once by the leader). */
int md_fsync_dir_group(const char *dir);
/* Tests: called by the leader just before its fsync; -1 (errno set) makes that fsync fail. */
extern int (*md_dirsync_hook)(const char *dir);
/* Tests and benchmarks: fsyncs run and callers served by md_fsync_dir_group since the start. */
void md_dirsync_stats(unsigned long *syncs_r, unsigned long *callers_r);
/* Replaces path with data: temp file, fsync, rename, fsync of the directory. 0 or -1 (logged). */
int md_write_atomic(const char *dir, const char *name, const char *data, size_t len);
/* The whole file in pool (NUL-terminated). 0, 1 when missing, -1 on error (logged). */
int md_read_file(const char *path, apr_pool_t *pool, char **data_r, size_t *len_r);
int md_lock_open(const char *dir, const char *name);  /* an fd to flock, -1 (logged) */
int md_lock(int fd);                                   /* blocking flock(LOCK_EX) */
void md_unlock(int fd);
/* mkdir -p of base, then of rel below it without following any symbolic link on the way. */
int md_mkdir_beneath(const char *base, const char *rel);
int md_make_maildir(const char *dir, int folder); /* new cur tmp (+ maildirfolder); 0, -1 logged */
int md_remove_tree(const char *path);
/* Copies src to the new file dst (O_EXCL) and fsyncs it. 0, -1 with errno. */
int md_copy_file(const char *src, const char *dst);
/* A copy of src published as dst (a name in dir's new/ or cur/) the Maildir way: written and fsync'ed in
   dir/tmp/ first, then given the name dst, never replacing a file there (EEXIST). No name in new/ or cur/
   ever shows a partial copy. 0, or -1 with errno. */
int md_copy_into(const char *src, const char *dir, const char *dst, apr_pool_t *pool);
/* The CRLF size of a file: its size plus one for each bare LF. */
int md_file_crlf_size(const char *path, uint64_t *size_r, int64_t *mtime_r);
/* Removes tmp/ files older than md_tmp_max_age seconds (their ctime): leftovers of a crash. */
void md_clean_tmp(const char *dir);
extern long md_tmp_max_age; /* MD_TMP_MAX_AGE; tests lower it */
uint32_t md_new_uidvalidity(const char *root, uint32_t old);

/* ---- keywords (maildir_index.c) ---- */
typedef struct md_keywords {
    apr_pool_t *pool;                   /* names live as long as the owner */
    const char *names[MD_NKEYWORDS];    /* letter 'a' + i, NULL when unused */
    dev_t dev;
    ino_t ino;
    off_t size;
    int64_t mtime_ns;
} md_keywords;

int md_keywords_load(md_keywords *kw, const char *dir);
/* The letter index of a keyword (case-insensitive), adding it to the file when `create` (the caller holds
   the folder lock). -1 when it is not there (or no letter is free: logged), -2 on an I/O error. */
int md_keywords_index(md_keywords *kw, const char *dir, const char *name, int create);

/* ---- the index (maildir_index.c) ---- */
typedef struct md_rec {
    uint32_t uid;
    uint32_t base_len;
    uint64_t modseq;
    uint64_t size;       /* CRLF size */
    int64_t date;        /* seconds */
    char *base;
    char *suffix;        /* "" or ":2,FS" */
    uint8_t in_new;      /* in new/ rather than cur/ */
    uint8_t dead;        /* expunged; removed at md_index_compact */
    uint8_t mark;        /* scratch */
} md_rec;

typedef struct md_index {
    apr_pool_t *pool;          /* parent of strpool */
    apr_pool_t *strpool;       /* recs' strings; replaced on a full parse */
    md_rec *recs;              /* ascending uid */
    uint32_t n, cap;
    uint32_t *hash, hcap;      /* base -> recs index + 1 */
    uint32_t uidvalidity, uidnext, first_recent;
    uint64_t highestmodseq, serial;
    int loaded;                /* 1: the state of the file below */
    dev_t dev;
    ino_t ino;
    uint64_t parsed;           /* bytes of the file in memory */
    uint64_t base_size;        /* bytes of the file up to the end of its last rewrite */
    int dirty;                 /* needs a rewrite (rebuilt, corrupt lines dropped) */
    int partial_tail;          /* the file ends in half a line (a crash while appending) */
    int need_compact;
    char *log;                 /* lines to append */
    size_t log_len, log_cap;
    int log_durable;           /* the lines assign UIDs: fdatasync them */
} md_index;

void md_index_init(md_index *ix, apr_pool_t *pool);
void md_index_reset(md_index *ix);
/* Brings ix up to the file (only the appended part when it was only appended to). MP_STORE_OK, or
   MP_STORE_ERR. A missing or unreadable header leaves ix->loaded 0: the caller rebuilds. old_uv_r gets
   a uidvalidity found in a corrupt file (0 if none). */
int md_index_load(md_index *ix, const char *dir, uint32_t *old_uv_r);
/* A fresh, empty index with a new UIDVALIDITY (a rebuild that cannot keep UIDs). */
void md_index_create(md_index *ix, uint32_t uidvalidity);
md_rec *md_index_find_uid(md_index *ix, uint32_t uid);
md_rec *md_index_find_base(md_index *ix, const char *base, size_t len);
md_rec *md_index_add(md_index *ix, const char *base, size_t len, const char *suffix, int in_new,
                     uint64_t size, int64_t date);
/* Records a changed location or suffix; bump: the flags changed, so the message gets a new MODSEQ. */
void md_index_update(md_index *ix, md_rec *r, const char *suffix, int in_new, int bump);
void md_index_expunge(md_index *ix, md_rec *r);
void md_index_claim_recent(md_index *ix);
void md_index_compact(md_index *ix);
/* Writes what changed: appends the new lines, or rewrites the file (temp, fsync, rename) when it was
   rebuilt or the appended part grew too big. Call with the folder lock held. */
int md_index_save(md_index *ix, const char *dir);

/* Locked sync of an index with the folder's files. */
enum {
    MD_SYNC_MOVE_NEW = 1,      /* move new/ files to cur/ (read-write views) */
    MD_SYNC_CLAIM_RECENT = 2   /* this caller is the first to see messages: they are its Recent ones */
};
/* With the folder lock held: loads the index, (re)builds it, compares it with new/ and cur/, assigns
   UIDs, saves. *claim_from_r: the first UID claimed as Recent (uidnext when none). */
int md_sync_locked(md_index *ix, const char *root, const char *dir, unsigned flags, uint32_t *claim_from_r);
/* Gives UIDs to messages a writer just linked into dir/cur (file names), under the folder lock. */
int md_index_register(const char *root, const char *dir, const char *const *names, const uint64_t *sizes,
                      const int64_t *dates, size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r);

/* ---- folders (maildir_folder.c) ---- */
struct md_watch_sub;
/* A folder as a stat sees it: cur/ and new/ (every delivery, expunge and flag change is an entry made,
   removed or renamed there) and its index (UIDs given by other readers). */
typedef struct md_stamp {
    int ok;
    int64_t taken_ns, cur_ns, new_ns, ix_ns;
    int64_t ix_size;
    uint64_t ix_ino;
} md_stamp;

struct mp_folder {
    mp_store_user *user;
    apr_pool_t *pool;
    const char *name, *dir, *root;
    int readonly;
    int lock_fd;          /* MD_INDEX_LOCK, flocked around each index change */
    int pop3_fd;          /* folder_lock's lock, or -1 */
    md_index ix;          /* the newest state this view knows */
    md_keywords kw;
    apr_pool_t *snap_pool;
    mp_msg *msgs;         /* the snapshot the session sees */
    uint32_t count;
    uint32_t snap_uidvalidity, snap_uidnext;
    uint64_t snap_hms;
    md_stamp stamp;       /* taken as the last sync began: unchanged since, the next sync has nothing to do */
    struct md_watch_sub *watch;
};

/* ---- the interface functions, by file ---- */
int md_user_open(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u_r);
void md_user_close(mp_store_user *u);
int md_quota(mp_store_user *u, mp_quota *q_r);
int md_quota_usage(mp_store_user *u, uint64_t *bytes_r, uint64_t *messages_r);

int md_list(mp_store_user *u, apr_pool_t *pool, apr_array_header_t **entries_r);
int md_create(mp_store_user *u, const char *name, uint32_t special_use);
int md_remove(mp_store_user *u, const char *name);
int md_rename(mp_store_user *u, const char *from, const char *to);
int md_subscribe(mp_store_user *u, const char *name, int on);

int md_folder_open(mp_store_user *u, const char *name, int readonly, apr_pool_t *pool, mp_folder **f_r);
void md_folder_close(mp_folder *f);
void md_folder_status(mp_folder *f, mp_folder_status *st_r);
void md_folder_messages(mp_folder *f, const mp_msg **msgs_r, uint32_t *count_r);
int md_folder_sync(mp_folder *f, const mp_sync_cb *cb, void *arg);
int md_folder_lock(mp_folder *f);
int md_folder_peek(mp_store_user *u, const char *name, mp_folder_status *st_r);
int md_message_open(mp_folder *f, uint32_t uid, apr_pool_t *pool, mp_msg_stream **stream_r);
long md_stream_read(mp_msg_stream *stream, char *buf, size_t len);
void md_stream_close(mp_msg_stream *stream);
int md_store_flags(mp_folder *f, uint32_t uid, int mode, uint32_t flags, uint32_t nkeywords,
                   const char *const *keywords, uint64_t unchangedsince);
int md_expunge(mp_folder *f, const uint32_t *uids, uint32_t nuids, const mp_sync_cb *cb, void *arg);
int md_copy(mp_folder *f, const uint32_t *uids, uint32_t nuids, const char *to, int move,
            uint32_t *uidvalidity_r, uint32_t *uids_r);

int md_save_begin(mp_store_user *u, const char *folder, apr_pool_t *pool, mp_save **save_r);
int md_save_write(mp_save *save, const void *data, size_t len);
int md_save_commit(mp_save *save, const mp_save_meta *meta, mp_save_target *targets, size_t ntargets);
void md_save_abort(mp_save *save);
/* Links `src` into dir/sub as <unique><base_tail><suffix>, or copies it when no link can be made. `first`:
   the unique part to try first (NULL: a new one); the base name used goes to *base_r. 0, or -1 + errno. */
int md_link_into(const char *src, const char *dir, const char *sub, const char *first, const char *base_tail,
                 const char *suffix, apr_pool_t *pool, const char **base_r);
/* Keyword letters of `names` in the folder `dir`, creating missing ones under the folder lock. */
int md_keyword_mask(const char *dir, uint32_t n, const char *const *names, uint32_t *mask_r);

/* ---- watching (maildir_watch.c) ---- */
int md_folder_watch(mp_folder *f, void (*notify)(void *arg), void *arg);
void md_watch_unsubscribe(mp_folder *f);
void md_watch_shutdown(void);

#endif
