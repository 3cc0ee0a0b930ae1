/*
 * syncfs(2) for Node, run on libuv's thread pool: `syncfs(fd)` returns a Promise that settles when
 * the file system holding `fd` has written back everything dirty. Node has fsync but no syncfs;
 * spawning `sync -f` for it forks the whole Node process (~16 ms for a 60 MB heap on this kind of
 * VM) and cannot overlap with the caller's own work.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "strata_native.h"

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int error; /* errno of syncfs, 0 when it succeeded */
} SyncJob;

static void run_on_pool(napi_env env, void *data) {
  (void)env;
  SyncJob *job = data;
  job->error = syncfs(job->fd) == 0 ? 0 : errno;
}

napi_value errno_error(napi_env env, int error, const char *syscall, const char *path) {
  const char *code = uv_err_name(-error);
  char message[4352]; /* a path is at most 4096 bytes */
  if (path) snprintf(message, sizeof message, "%s: %s, %s '%s'", code, uv_strerror(-error), syscall, path);
  else snprintf(message, sizeof message, "%s: %s, %s", code, uv_strerror(-error), syscall);
  napi_value code_value, message_value, errno_value, syscall_value, result;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value);
  napi_create_int32(env, -error, &errno_value);
  napi_create_error(env, code_value, message_value, &result);
  napi_set_named_property(env, result, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, result, "syscall", syscall_value);
  if (path) {
    napi_value path_value;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &path_value);
    napi_set_named_property(env, result, "path", path_value);
  }
  return result;
}

static void settle(napi_env env, napi_status status, void *data) {
  SyncJob *job = data;
  if (status == napi_ok && job->error == 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  } else {
    napi_reject_deferred(env, job->deferred, errno_error(env, job->error ? job->error : ECANCELED, "syncfs", NULL));
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

static napi_value syncfs_async(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], promise, name;
  int32_t fd;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "syncfs: the argument must be a file descriptor");
    return NULL;
  }
  SyncJob *job = calloc(1, sizeof *job);
  if (job == NULL) {
    napi_throw_error(env, "ENOMEM", "syncfs: out of memory");
    return NULL;
  }
  job->fd = fd;
  napi_create_promise(env, &job->deferred, &promise);
  napi_create_string_utf8(env, "strata:syncfs", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, run_on_pool, settle, job, &job->work);
  napi_queue_async_work(env, job->work);
  return promise;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_function(env, exports, "syncfs", syncfs_async);
  export_function(env, exports, "treeWriter", tree_writer_create);
  export_function(env, exports, "treeWriterPush", tree_writer_push);
  export_function(env, exports, "treeWriterDone", tree_writer_done);
  export_function(env, exports, "treeWriterFailed", tree_writer_failed);
  export_function(env, exports, "treeWriterIdle", tree_writer_idle);
  export_function(env, exports, "treeWriterClose", tree_writer_close);
  export_function(env, exports, "treeWriterTakeLocks", tree_writer_take_locks);
  return exports;
}
