/* error.c — rk_strerror / rk_err_name from the one X-macro table, and the version queries. */
#include <stdio.h>

#include "ringkernel/error.h"
#include "ringkernel/version.h"

#define RK__STR2(x) #x
#define RK__STR(x) RK__STR2(x)

const char *rk_strerror(int err) {
  static _Thread_local char app[40];
  if (rk_err_app(err) >= 0) {
    snprintf(app, sizeof app, "application error %d", rk_err_app(err));
    return app;
  }
  switch (err) {
    case RK_OK:
      return "success";
#define RK__MSG(name, value, msg) \
  case value:                     \
    return msg;
      RK_ERRNO_MAP(RK__MSG)
#undef RK__MSG
    default:
      return "unknown error";
  }
}

const char *rk_err_name(int err) {
  if (rk_err_app(err) >= 0) return "RK_EAPP";
  switch (err) {
    case RK_OK:
      return "RK_OK";
#define RK__NAME(name, value, msg) \
  case value:                      \
    return "RK_" #name;
      RK_ERRNO_MAP(RK__NAME)
#undef RK__NAME
    default:
      return "RK_UNKNOWN";
  }
}

unsigned rk_version(void) { return RK_VERSION_HEX; }

const char *rk_version_string(void) {
  return RK__STR(RK_VERSION_MAJOR) "." RK__STR(RK_VERSION_MINOR) "." RK__STR(RK_VERSION_PATCH)
#if defined(RK_HAVE_CUDA)
      " (cuda)"
#else
      " (cpu)"
#endif
      ;
}
