/* builtins.c — the built-in kernels' descriptors for the host (CPU handlers from the shared
 * dialect source in src/device/builtins.h). */
#include "device/builtins.h"
#include "host/internal.h"

static const rk_msg_type *const vadd_types[] = {&rk_vadd_req_msgtype};
static const rk_msg_type *const counter_types[] = {&rk_counter_add_msgtype};

#define RK__DESC(nm, fn, st, types, ntypes)                                                          \
  {                                                                                                \
    sizeof(rk_kernel_desc), nm, fn, NULL, NULL, NULL, NULL, st, NULL, NULL, 0, 1, 1, 1024, 0, 256, \
        RK_BACKPRESSURE_BLOCK, types, ntypes                                                       \
  }

const rk_kernel_desc rk_builtin_echo = RK__DESC("echo", rk_echo_handler, 0, NULL, 0);
const rk_kernel_desc rk_builtin_vector_add = RK__DESC("vector_add", rk_vector_add_handler, 0, vadd_types, 1);
const rk_kernel_desc rk_builtin_counter =
    RK__DESC("counter", rk_counter_handler, sizeof(rk_counter_state), counter_types, 1);
