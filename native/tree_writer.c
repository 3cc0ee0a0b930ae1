/*
 * A tree writer: creates the nodes of a file system tree on libuv's thread pool, from a queue of
 * operation buffers that JavaScript fills (src/fs/tree-writer.ts encodes them). A NAR restore
 * parses and hashes on the main thread while this thread makes the system calls: importing
 * 1,000 store paths is ~27,000 of them (mkdir, open, write, futimens, close, chmod, utimensat),
 * about half of the restore's time, and through Node's fs each also paid the binding's own cost.
 *
 * Buffers run in the order they were pushed, one at a time, by at most one pool thread per
 * writer. The first failing call stops the writer: later buffers are dropped, open files closed,
 * and every wait rejects with that call's errno error. Each pushed buffer is referenced until it
 * is done, so it outlives a JavaScript caller that lets go of it.
 *
 * Operations (little-endian u32 fields, paths and targets followed by one NUL):
 *   1 MKDIR   len path                 mkdir(path, 0777)
 *   2 OPEN    slot mode len path       open(path, O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, mode)
 *   3 WRITE   slot n bytes             write all n bytes to the slot's file
 *   4 CLOSE   slot                     futimens(atime now, mtime 1), close
 *   5 SYMLINK len path tlen target     symlink(target, path), utimensat(no follow)
 *   6 SEAL    len path                 chmod(path, 0555), utimensat(no follow): a finished directory
 *   7 LOCK    index len path           take Nix's lock file `path` without waiting (see below)
 * The mtime is the Nix store's: 1 (1970-01-01T00:00:01Z).
 *
 * LOCK takes a batch's per-path locks on this thread, ahead of its restores, so that making the
 * lock files (~0.1-0.2 ms each here) is not on the main thread: open(O_RDWR|O_CREAT|O_APPEND,
 * 0600), flock(LOCK_EX|LOCK_NB), and a one-byte pread at 0 (a file holding the `d` of a released
 * lock is stale). The locks come in sorted order, and the first one not taken — held by someone
 * else, stale, or failing — stops the taking: the rest are left to JavaScript, which waits for
 * them in the same order (src/store/local/locks.ts), so two processes still cannot deadlock. A
 * lock not taken is not a failure of the writer. treeWriterTakeLocks hands the descriptors over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strata_native.h"

enum { OP_MKDIR = 1, OP_OPEN = 2, OP_WRITE = 3, OP_CLOSE = 4, OP_SYMLINK = 5, OP_SEAL = 6, OP_LOCK = 7 };
/* Files open at once across the restores sharing a writer: one per restore (TreeWriter.MAX_RESTORES). */
#define SLOTS 256

typedef struct Chunk {
  const uint8_t *data;
  size_t length;
  napi_ref ref; /* keeps the Buffer alive; deleted on the main thread once the chunk is done */
  struct Chunk *next;
} Chunk;

typedef struct {
  pthread_mutex_t lock;
  Chunk *head, *tail;  /* pushed, not yet taken by the pool thread */
  Chunk *finished;     /* done, their references still to delete on the main thread */
  int running;         /* a pool job is draining the queue */
  /* Main thread only: jobs queued whose completion has not run yet, and whether the JavaScript
   * object was collected. The writer is freed when both say nobody can reach it any more. */
  int jobs;
  int orphaned;
  uint64_t done;       /* bytes of pushed buffers finished (run or dropped) */
  int error;           /* errno of the first failure, 0 while none */
  const char *syscall; /* its call */
  char *path;          /* its path (malloc'd) */
  int fds[SLOTS];      /* touched by the pool thread only while running, by close() only when idle */
  int *locks;          /* lock descriptors by LOCK index, -1 when not taken; as fds[] */
  uint32_t nlocks, caplocks;
  int locks_stopped;   /* a lock was not taken: the later ones are left to JavaScript */
  napi_deferred *waiters;
  size_t nwaiters, capwaiters;
} Writer;

typedef struct {
  napi_async_work work;
  Writer *writer;
} Job;

static uint32_t u32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v; /* x86-64 and aarch64 Linux: little-endian, as the encoder writes */
}

/* Pool thread, lock not held: records the first failure. */
static void fail(Writer *w, const char *syscall, const char *path, int error) {
  char *copy = path ? strdup(path) : NULL;
  pthread_mutex_lock(&w->lock);
  w->error = error;
  w->syscall = syscall;
  w->path = copy;
  pthread_mutex_unlock(&w->lock);
}

static const struct timespec STORE_TIMES[2] = {{0, UTIME_NOW}, {1, 0}};

/* A buffer that does not decode (never one from src/fs/tree-writer.ts): EINVAL, nothing run past it. */
static int malformed(Writer *w) {
  return fail(w, "treeWriter", NULL, EINVAL), -1;
}

/* A length-prefixed, NUL-terminated string of `len` bytes at p, wholly before end, with no NUL inside. */
static int string_ok(const uint8_t *p, const uint8_t *end, uint32_t len) {
  return (size_t)(end - p) > len && p[len] == 0 && memchr(p, 0, len) == NULL;
}

static int slot_ok(uint32_t slot) {
  return slot < SLOTS;
}

/* Pool thread: a LOCK (see the top of the file); records descriptor or -1 at `index`. */
static void take_lock(Writer *w, uint32_t index, const char *path) {
  if (index >= w->caplocks) {
    uint32_t cap = w->caplocks ? w->caplocks : 64;
    while (cap <= index) cap *= 2;
    int *grown = realloc(w->locks, cap * sizeof *grown);
    if (grown == NULL) {
      w->locks_stopped = 1;
      return;
    }
    for (uint32_t i = w->caplocks; i < cap; i++) grown[i] = -1;
    w->locks = grown;
    w->caplocks = cap;
  }
  if (index >= w->nlocks) w->nlocks = index + 1;
  if (w->locks_stopped) return;
  int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  char mark;
  if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && pread(fd, &mark, 1, 0) == 0) {
    w->locks[index] = fd;
    return;
  }
  if (fd >= 0) close(fd);
  w->locks_stopped = 1;
}

/* A collected writer: closes the lock descriptors never handed over. */
static void close_locks(Writer *w) {
  for (uint32_t i = 0; i < w->nlocks; i++)
    if (w->locks[i] >= 0) close(w->locks[i]);
}

/* Runs one buffer of operations; on failure records it and returns -1. */
static int run_chunk(Writer *w, const uint8_t *p, const uint8_t *end) {
#define NEED(n) \
  if ((size_t)(end - p) < (size_t)(n)) return malformed(w)
  while (p < end) {
    NEED(4);
    uint32_t op = u32(p);
    p += 4;
    switch (op) {
      case OP_MKDIR: {
        NEED(4);
        uint32_t len = u32(p);
        const char *path = (const char *)p + 4;
        if (!string_ok(p + 4, end, len)) return malformed(w);
        p += 4 + (size_t)len + 1;
        if (mkdir(path, 0777) != 0) return fail(w, "mkdir", path, errno), -1;
        break;
      }
      case OP_OPEN: {
        NEED(12);
        uint32_t slot = u32(p), mode = u32(p + 4), len = u32(p + 8);
        const char *path = (const char *)p + 12;
        if (!slot_ok(slot) || w->fds[slot] >= 0 || !string_ok(p + 12, end, len)) return malformed(w);
        p += 12 + (size_t)len + 1;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0) return fail(w, "open", path, errno), -1;
        w->fds[slot] = fd;
        break;
      }
      case OP_WRITE: {
        NEED(8);
        uint32_t slot = u32(p), n = u32(p + 4);
        const uint8_t *bytes = p + 8;
        if (!slot_ok(slot) || w->fds[slot] < 0 || (size_t)(end - bytes) < n) return malformed(w);
        p += 8 + (size_t)n;
        int fd = w->fds[slot];
        while (n > 0) {
          ssize_t k = write(fd, bytes, n);
          if (k < 0 && errno == EINTR) continue;
          if (k <= 0) return fail(w, "write", NULL, k < 0 ? errno : EIO), -1;
          bytes += k;
          n -= (uint32_t)k;
        }
        break;
      }
      case OP_CLOSE: {
        NEED(4);
        uint32_t slot = u32(p);
        if (!slot_ok(slot) || w->fds[slot] < 0) return malformed(w);
        p += 4;
        int fd = w->fds[slot];
        w->fds[slot] = -1;
        int timed = futimens(fd, STORE_TIMES);
        int error = errno;
        if (close(fd) != 0 && timed == 0) return fail(w, "close", NULL, errno), -1;
        if (timed != 0) return fail(w, "futime", NULL, error), -1;
        break;
      }
      case OP_SYMLINK: {
        NEED(8);
        uint32_t len = u32(p), tlen = u32(p + 4);
        const char *path = (const char *)p + 8;
        if (!string_ok(p + 8, end, len)) return malformed(w);
        const uint8_t *t = p + 8 + (size_t)len + 1;
        if (!string_ok(t, end, tlen)) return malformed(w);
        const char *target = (const char *)t;
        p = t + (size_t)tlen + 1;
        if (symlink(target, path) != 0) return fail(w, "symlink", path, errno), -1;
        if (utimensat(AT_FDCWD, path, STORE_TIMES, AT_SYMLINK_NOFOLLOW) != 0) return fail(w, "lutime", path, errno), -1;
        break;
      }
      case OP_SEAL: {
        NEED(4);
        uint32_t len = u32(p);
        const char *path = (const char *)p + 4;
        if (!string_ok(p + 4, end, len)) return malformed(w);
        p += 4 + (size_t)len + 1;
        if (chmod(path, 0555) != 0) return fail(w, "chmod", path, errno), -1;
        if (utimensat(AT_FDCWD, path, STORE_TIMES, AT_SYMLINK_NOFOLLOW) != 0) return fail(w, "lutime", path, errno), -1;
        break;
      }
      case OP_LOCK: {
        NEED(8);
        uint32_t index = u32(p), len = u32(p + 4);
        const char *path = (const char *)p + 8;
        if (!string_ok(p + 8, end, len)) return malformed(w);
        p += 8 + (size_t)len + 1;
        take_lock(w, index, path);
        break;
      }
      default:
        return malformed(w);
    }
  }
  return 0;
#undef NEED
}

static void close_files(Writer *w) {
  for (int i = 0; i < SLOTS; i++) {
    if (w->fds[i] >= 0) close(w->fds[i]);
    w->fds[i] = -1;
  }
}

/* Pool thread: drains the queue, buffer by buffer, until it is empty. */
static void drain(napi_env env, void *data) {
  (void)env;
  Writer *w = ((Job *)data)->writer;
  pthread_mutex_lock(&w->lock);
  while (w->head != NULL) {
    Chunk *c = w->head;
    w->head = c->next;
    if (w->head == NULL) w->tail = NULL;
    int stopped = w->error != 0;
    pthread_mutex_unlock(&w->lock);
    if (!stopped && run_chunk(w, c->data, c->data + c->length) != 0) close_files(w);
    pthread_mutex_lock(&w->lock);
    w->done += c->length;
    c->next = w->finished;
    w->finished = c;
  }
  w->running = 0;
  pthread_mutex_unlock(&w->lock);
}

static void free_writer(Writer *w) {
  close_files(w);
  close_locks(w);
  free(w->locks);
  pthread_mutex_destroy(&w->lock);
  free(w->path);
  free(w->waiters);
  free(w);
}

/* Whether nothing is queued or running (takes the lock). */
static int idle(Writer *w) {
  pthread_mutex_lock(&w->lock);
  int now_idle = !w->running && w->head == NULL;
  pthread_mutex_unlock(&w->lock);
  return now_idle;
}

/* Settles one wait with the writer's outcome (main thread, once idle). */
static void settle_waiter(napi_env env, Writer *w, napi_deferred deferred) {
  if (w->error != 0) {
    napi_reject_deferred(env, deferred, errno_error(env, w->error, w->syscall, w->path));
    return;
  }
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_resolve_deferred(env, deferred, undefined);
}

/* Main thread, after a drain: settles the waits if nothing is left to run. */
static void drained(napi_env env, napi_status status, void *data) {
  (void)status;
  Job *job = data;
  Writer *w = job->writer;
  if (job->work != NULL) napi_delete_async_work(env, job->work);
  free(job);
  w->jobs--;
  pthread_mutex_lock(&w->lock);
  Chunk *finished = w->finished;
  w->finished = NULL;
  pthread_mutex_unlock(&w->lock);
  while (finished != NULL) {
    Chunk *next = finished->next;
    napi_delete_reference(env, finished->ref);
    free(finished);
    finished = next;
  }
  if (w->orphaned) {
    if (w->jobs == 0) free_writer(w);
    return;
  }
  if (!idle(w)) return;
  size_t n = w->nwaiters;
  w->nwaiters = 0;
  for (size_t i = 0; i < n; i++) settle_waiter(env, w, w->waiters[i]);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Writer *w = data;
  w->orphaned = 1;
  if (w->jobs == 0) free_writer(w);
}

static Writer *writer_arg(napi_env env, napi_callback_info info, napi_value *argv, size_t want) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  void *w = NULL;
  if (argc < want || napi_get_value_external(env, argv[0], &w) != napi_ok || w == NULL) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "treeWriter: the first argument must be a tree writer");
    return NULL;
  }
  return w;
}

/* treeWriter() → a new writer (an external). */
napi_value tree_writer_create(napi_env env, napi_callback_info info) {
  (void)info;
  Writer *w = calloc(1, sizeof *w);
  if (w == NULL) {
    napi_throw_error(env, "ENOMEM", "treeWriter: out of memory");
    return NULL;
  }
  pthread_mutex_init(&w->lock, NULL);
  for (int i = 0; i < SLOTS; i++) w->fds[i] = -1;
  napi_value result;
  napi_create_external(env, w, finalize, NULL, &result);
  return result;
}

/* treeWriterPush(writer, buffer): queues the buffer's operations. */
napi_value tree_writer_push(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  Writer *w = writer_arg(env, info, argv, 2);
  if (w == NULL) return NULL;
  void *data;
  size_t length;
  if (napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "treeWriterPush: the second argument must be a Buffer");
    return NULL;
  }
  Chunk *c = malloc(sizeof *c);
  Job *job = calloc(1, sizeof *job);
  if (c == NULL || job == NULL) {
    free(c);
    free(job);
    napi_throw_error(env, "ENOMEM", "treeWriterPush: out of memory");
    return NULL;
  }
  *c = (Chunk){data, length, NULL, NULL};
  if (napi_create_reference(env, argv[1], 1, &c->ref) != napi_ok) {
    free(c);
    free(job);
    napi_throw_error(env, "ENOMEM", "treeWriterPush: cannot reference the buffer");
    return NULL;
  }
  pthread_mutex_lock(&w->lock);
  if (w->tail) w->tail->next = c;
  else w->head = c;
  w->tail = c;
  int start = !w->running;
  w->running = 1;
  pthread_mutex_unlock(&w->lock);
  if (!start) {
    free(job);
    return NULL;
  }
  napi_value name;
  napi_create_string_utf8(env, "strata:treeWriter", NAPI_AUTO_LENGTH, &name);
  job->writer = w;
  w->jobs++;
  if (napi_create_async_work(env, NULL, name, drain, drained, job, &job->work) == napi_ok &&
      napi_queue_async_work(env, job->work) == napi_ok)
    return NULL;
  /* No pool job to be had: drain here, on the main thread, so the queue never stalls. */
  drain(env, job);
  drained(env, napi_ok, job);
  return NULL;
}

/* The writer's progress as the pool thread leaves it: bytes done, and whether a call failed. */
static Writer *progress(napi_env env, napi_callback_info info, double *done, int *failed) {
  napi_value argv[1];
  Writer *w = writer_arg(env, info, argv, 1);
  if (w == NULL) return NULL;
  pthread_mutex_lock(&w->lock);
  *done = (double)w->done;
  *failed = w->error != 0;
  pthread_mutex_unlock(&w->lock);
  return w;
}

/* treeWriterDone(writer) → bytes of pushed buffers finished so far. */
napi_value tree_writer_done(napi_env env, napi_callback_info info) {
  double done;
  int failed;
  napi_value result;
  if (progress(env, info, &done, &failed) == NULL) return NULL;
  napi_create_double(env, done, &result);
  return result;
}

/* treeWriterFailed(writer) → whether a call has failed (its error comes with the next idle wait). */
napi_value tree_writer_failed(napi_env env, napi_callback_info info) {
  double done;
  int failed;
  napi_value result;
  if (progress(env, info, &done, &failed) == NULL) return NULL;
  napi_get_boolean(env, failed, &result);
  return result;
}

/* treeWriterIdle(writer) → a Promise settled once every pushed buffer has run (or was dropped). */
napi_value tree_writer_idle(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise;
  Writer *w = writer_arg(env, info, argv, 1);
  if (w == NULL) return NULL;
  napi_deferred deferred;
  napi_create_promise(env, &deferred, &promise);
  if (idle(w)) {
    settle_waiter(env, w, deferred);
    return promise;
  }
  if (w->nwaiters == w->capwaiters) {
    size_t cap = w->capwaiters ? 2 * w->capwaiters : 4;
    napi_deferred *grown = realloc(w->waiters, cap * sizeof *grown);
    if (grown == NULL) {
      napi_throw_error(env, "ENOMEM", "treeWriterIdle: out of memory");
      return NULL;
    }
    w->waiters = grown;
    w->capwaiters = cap;
  }
  w->waiters[w->nwaiters++] = deferred;
  return promise;
}

/* treeWriterClose(writer): closes the files a stopped restore left open. Only when idle. */
napi_value tree_writer_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  Writer *w = writer_arg(env, info, argv, 1);
  if (w == NULL) return NULL;
  if (!idle(w)) {
    napi_throw_error(env, "ERR_INVALID_STATE", "treeWriterClose: the writer is still running");
    return NULL;
  }
  close_files(w);
  return NULL;
}

/*
 * treeWriterTakeLocks(writer) → the descriptors of the locks LOCK took, by index (-1 for one not
 * taken), handed over to the caller, who releases them. Only when idle.
 */
napi_value tree_writer_take_locks(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  Writer *w = writer_arg(env, info, argv, 1);
  if (w == NULL) return NULL;
  if (!idle(w)) {
    napi_throw_error(env, "ERR_INVALID_STATE", "treeWriterTakeLocks: the writer is still running");
    return NULL;
  }
  napi_create_array_with_length(env, w->nlocks, &result);
  for (uint32_t i = 0; i < w->nlocks; i++) {
    napi_value fd;
    napi_create_int32(env, w->locks[i], &fd);
    napi_set_element(env, result, i, fd);
    w->locks[i] = -1;
  }
  w->nlocks = 0;
  w->locks_stopped = 0;
  return result;
}
