/*
 * The `store` provider interface: mailbox storage for SMTP delivery, POP3 and IMAP.
 *
 * A handler gets an instance with host->provider_instance(s, "store", "MailStore", MP_STORE_IFACE_VERSION,
 * &iface): the host finds the provider named before the colon of the directive's value
 * ("maildir:mail/%d/%n"), checks the interface version and makes the instance from the rest. Every function may block on the disk: call them from a job
 * (host->run_blocking) unless they are documented as cheap. One mp_store_user and its folders are used by one
 * session at a time; different sessions and processes may work on the same user at once.
 *
 * Names. Folder names cross this interface as UTF-8, with "/" separating levels; "INBOX" (any case) is the
 * inbox. The provider refuses a name it cannot store safely with MP_STORE_BADNAME: empty levels, "." or
 * "..", control characters, a leading "/", over-long names. IMAP's modified UTF-7 is the IMAP handler's
 * business (modules/common has the conversion).
 *
 * Messages are read as a stream with CRLF line ends whatever the file holds, and `size` is the size of
 * that stream: what POP3 LIST and IMAP RFC822.SIZE report.
 */
#ifndef MAILPROTO_STORE_H
#define MAILPROTO_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include <apr_time.h>
#include <mailproto/module.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MP_STORE_IFACE_VERSION 1

/* Results. */
enum {
    MP_STORE_OK = 0,
    MP_STORE_ERR = -1,       /* I/O or internal error; the provider logged it */
    MP_STORE_NOTFOUND = -2,  /* no such folder, message or user */
    MP_STORE_EXISTS = -3,    /* create/rename onto an existing folder */
    MP_STORE_BADNAME = -4,   /* a folder or user name the store refuses (see above) */
    MP_STORE_OVERQUOTA = -5, /* the write would exceed the user's quota */
    MP_STORE_LOCKED = -6,    /* folder_lock: another session holds it */
    MP_STORE_READONLY = -7,  /* a change on a folder opened read-only */
    MP_STORE_NOTEMPTY = -8,  /* delete of a folder that has subfolders */
    MP_STORE_MODIFIED = -9   /* store_flags: UNCHANGEDSINCE failed (RFC 7162) */
};

/* System flags (RFC 3501 section 2.3.2). Recent is session state: set on messages this session is the
   first to see. */
#define MP_FLAG_SEEN 0x01u
#define MP_FLAG_ANSWERED 0x02u
#define MP_FLAG_FLAGGED 0x04u
#define MP_FLAG_DELETED 0x08u
#define MP_FLAG_DRAFT 0x10u
#define MP_FLAG_RECENT 0x20u

/* Folder attributes (RFC 3501 LIST, RFC 3348 children, RFC 6154 SPECIAL-USE). */
#define MP_FOLDER_NOSELECT 0x001u
#define MP_FOLDER_HASCHILDREN 0x002u
#define MP_FOLDER_HASNOCHILDREN 0x004u
#define MP_FOLDER_SUBSCRIBED 0x008u
#define MP_FOLDER_SENT 0x010u
#define MP_FOLDER_DRAFTS 0x020u
#define MP_FOLDER_TRASH 0x040u
#define MP_FOLDER_JUNK 0x080u
#define MP_FOLDER_ARCHIVE 0x100u

typedef struct mp_store mp_store;             /* an instance: one MailStore configuration */
typedef struct mp_store_user mp_store_user;   /* one user's mail, open */
typedef struct mp_folder mp_folder;           /* one folder as one session sees it */
typedef struct mp_msg_stream mp_msg_stream;
typedef struct mp_save mp_save;               /* a message being written */

typedef struct mp_msg {
    uint32_t uid;              /* RFC 3501 section 2.3.1.1: strictly ascending, never reused */
    uint32_t flags;            /* MP_FLAG_* */
    uint64_t size;             /* octets of the CRLF stream */
    uint64_t modseq;           /* RFC 7162: the last change to this message */
    apr_time_t internal_date;
    const char *key;           /* stable and unique in the folder for the message's life (POP3 UIDL) */
    uint32_t nkeywords;
    const char *const *keywords;
} mp_msg;

typedef struct mp_folder_entry {
    const char *name;          /* UTF-8, "/"-separated */
    uint32_t attrs;            /* MP_FOLDER_* */
} mp_folder_entry;

typedef struct mp_folder_status {
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint32_t messages;
    uint32_t recent;
    uint32_t unseen;
    uint64_t highestmodseq;
} mp_folder_status;

typedef struct mp_quota {
    uint64_t bytes, bytes_limit;       /* limit 0: none */
    uint64_t messages, messages_limit;
} mp_quota;

/* Changes found by folder_sync, in the order a client must hear them. */
typedef struct mp_sync_cb {
    /* Message `seq` (1-based, in the view before this expunge) is gone. Called highest first. */
    void (*expunged)(void *arg, uint32_t seq, uint32_t uid);
    /* Message `seq` of the new view has new flags or keywords. */
    void (*flags)(void *arg, uint32_t seq, const mp_msg *msg);
    /* The view now has `count` messages (new ones appended at the end). */
    void (*exists)(void *arg, uint32_t count, uint32_t recent);
} mp_sync_cb;

/* What a saved message gets. save_commit takes NULL for a plain delivery ({.delivery = 1}). */
typedef struct mp_save_meta {
    uint32_t flags;
    uint32_t nkeywords;
    const char *const *keywords;
    apr_time_t internal_date;  /* 0: now */
    /* 1: a delivery (SMTP, LMTP). The message is new to the user and gets its UID when a reader next syncs
       the folder, so concurrent deliveries never wait for a folder's index lock; the targets' uid and
       uidvalidity stay 0. 0 (APPEND): UIDs are assigned before save_commit returns (RFC 4315 APPENDUID). */
    int delivery;
} mp_save_meta;

/* A destination of a save: one user's folder (SMTP delivery to several recipients, IMAP COPY). */
typedef struct mp_save_target {
    mp_store_user *user;
    const char *folder;        /* "INBOX" for delivery */
    int result;                /* out: MP_STORE_OK or an error, per target */
    uint32_t uidvalidity;      /* out (UIDPLUS, RFC 4315) */
    uint32_t uid;              /* out */
} mp_save_target;

typedef struct mp_store_iface {
    /* An instance (an mp_store *) from the text after "maildir:" in MailStore. Relative paths resolve
       against base_dir. Returns MP_STORE_OK, or sets *err_r. Cheap. Handlers get instances from
       host->provider_instance(s, "store", "MailStore", ...), which calls this once per configuration. */
    mp_instance_fn instance;

    /* ---- users ---- */
    /* Opens the store of `user` ("alice@example.test"; the spec's %u %n %d pick the folder), creating it
       when `create`. MP_STORE_BADNAME for a user name that cannot be a path safely. */
    int (*user_open)(mp_store *st, const char *user, int create, apr_pool_t *pool, mp_store_user **u_r);
    void (*user_close)(mp_store_user *u);
    int (*quota)(mp_store_user *u, mp_quota *q_r);
    /* Sets the limits (from the user database; 0 = none). Cheap. */
    void (*set_quota_limits)(mp_store_user *u, uint64_t bytes_limit, uint64_t messages_limit);

    /* ---- folders ---- */
    /* Every folder (INBOX first), with attributes. */
    int (*list)(mp_store_user *u, apr_pool_t *pool, apr_array_header_t **entries_r /* of mp_folder_entry */);
    int (*create)(mp_store_user *u, const char *name, uint32_t special_use /* MP_FOLDER_SENT... or 0 */);
    int (*remove)(mp_store_user *u, const char *name);
    /* RFC 3501 RENAME: moves subfolders too; renaming INBOX moves its messages into a new folder. */
    int (*rename)(mp_store_user *u, const char *from, const char *to);
    int (*subscribe)(mp_store_user *u, const char *name, int on);

    /* ---- one folder ---- */
    /* Opens a view. Read-write opening marks new messages seen by no one as Recent for this view. */
    int (*folder_open)(mp_store_user *u, const char *name, int readonly, apr_pool_t *pool, mp_folder **f_r);
    void (*folder_close)(mp_folder *f);
    /* Cheap: from the view. */
    void (*folder_status)(mp_folder *f, mp_folder_status *st_r);
    /* The view: msgs[0] is message 1. Stays valid and unchanged until the next folder_sync/expunge/close.
       Cheap. */
    void (*folder_messages)(mp_folder *f, const mp_msg **msgs_r, uint32_t *count_r);
    /* Brings the view up to date with every writer's changes, reporting them through cb. */
    int (*folder_sync)(mp_folder *f, const mp_sync_cb *cb, void *arg);
    /* notify(arg) is called from another thread, soon after any writer changes the folder, until
       folder_watch(f, NULL, NULL) or folder_close. The provider never calls notify after those returned.
       Use host->wakeup() in notify. */
    int (*folder_watch)(mp_folder *f, void (*notify)(void *arg), void *arg);
    /* Exclusive maildrop lock for POP3 (RFC 1939 section 8): MP_STORE_LOCKED when another holds it.
       Released by folder_close. Other readers and deliveries go on. */
    int (*folder_lock)(mp_folder *f);
    /* Quick STATUS of a folder that is not open. */
    int (*folder_peek)(mp_store_user *u, const char *name, mp_folder_status *st_r);

    /* ---- messages ---- */
    int (*message_open)(mp_folder *f, uint32_t uid, apr_pool_t *pool, mp_msg_stream **stream_r);
    /* Reads up to len bytes of the CRLF stream: > 0 bytes, 0 at the end, < 0 error. */
    long (*stream_read)(mp_msg_stream *stream, char *buf, size_t len);
    void (*stream_close)(mp_msg_stream *stream);
    /* mode: 0 replace, 1 add, -1 remove. unchangedsince 0: unconditional. Updates the view's entry. */
    int (*store_flags)(mp_folder *f, uint32_t uid, int mode, uint32_t flags, uint32_t nkeywords,
                       const char *const *keywords, uint64_t unchangedsince);
    /* Removes the messages with \Deleted (uids NULL) or those of `uids` that have \Deleted (UID EXPUNGE),
       reporting each through cb->expunged. */
    int (*expunge)(mp_folder *f, const uint32_t *uids, uint32_t nuids, const mp_sync_cb *cb, void *arg);
    /* Copies (move: and expunges) messages into another folder of the same user; new UIDs in uids_r
       (UIDPLUS). */
    int (*copy)(mp_folder *f, const uint32_t *uids, uint32_t nuids, const char *to, int move,
                uint32_t *uidvalidity_r, uint32_t *uids_r);

    /* ---- writing a message (delivery, APPEND) ---- */
    /* The message is written once (to the first target's folder, spooled as it arrives), then
       save_commit makes it durable in every target (fsync of the file and of the folders; hard links to
       the other targets where the file system allows) and only then returns. */
    int (*save_begin)(mp_store_user *u, const char *folder, apr_pool_t *pool, mp_save **save_r);
    int (*save_write)(mp_save *save, const void *data, size_t len);
    /* Returns MP_STORE_OK when at least one target succeeded; each target has its own result. */
    int (*save_commit)(mp_save *save, const mp_save_meta *meta, mp_save_target *targets, size_t ntargets);
    void (*save_abort)(mp_save *save);

    void *reserved[8];
} mp_store_iface;

#ifdef __cplusplus
}
#endif

#endif
