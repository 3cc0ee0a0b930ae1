/* What the parts of the addon share. */
#ifndef STRATA_NATIVE_H
#define STRATA_NATIVE_H
#define NAPI_VERSION 8
#include <node_api.h>

/* An Error as Node's fs makes them: "ECODE: libuv's description, syscall 'path'", with errno, code, syscall and path. */
napi_value errno_error(napi_env env, int error, const char *syscall, const char *path);

napi_value tree_writer_create(napi_env env, napi_callback_info info);
napi_value tree_writer_push(napi_env env, napi_callback_info info);
napi_value tree_writer_done(napi_env env, napi_callback_info info);
napi_value tree_writer_failed(napi_env env, napi_callback_info info);
napi_value tree_writer_idle(napi_env env, napi_callback_info info);
napi_value tree_writer_close(napi_env env, napi_callback_info info);
napi_value tree_writer_take_locks(napi_env env, napi_callback_info info);
#endif
