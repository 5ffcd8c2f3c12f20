/* builtins.c — the built-in kernels' descriptors for the host (CPU handlers from the shared
 * dialect source in src/device/builtins.h). */
#include <string.h>

#include "device/builtins.h"
#include "host/internal.h"

static const rk_msg_type *const vadd_types[] = {&rk_vadd_req_msgtype, &rk_vadd_buf_req_msgtype};
static const rk_msg_type *const counter_types[] = {&rk_counter_add_msgtype};

/* CPU handler and CUDA entry point (src/device/builtins.cu) from the same dialect source. */
#define RK__DESC(nm, fn, entry, st, types, ntypes, maxl)                                            \
  {                                                                                                 \
    sizeof(rk_kernel_desc), nm, fn, NULL, entry, {NULL}, {NULL}, st, NULL, NULL, 0, 1, 1, 1024, 0, 256, \
        RK_BACKPRESSURE_BLOCK, types, ntypes, maxl                                                  \
  }

const rk_kernel_desc rk_builtin_echo = RK__DESC("echo", rk_echo_handler, "rk_ring_kernel_echo", 0, NULL, 0, 0);
const rk_kernel_desc rk_builtin_vector_add =
    RK__DESC("vector_add", rk_vector_add_handler, "rk_ring_kernel_vector_add", 0, vadd_types, 2, 0);
const rk_kernel_desc rk_builtin_counter = RK__DESC("counter", rk_counter_handler, "rk_ring_kernel_counter",
                                                   sizeof(rk_counter_state), counter_types, 1, 1);

/* Message types by name (rk_msg_type_find): the built-ins' replies included, which no descriptor
 * lists. */
static const rk_msg_type *const builtin_types[] = {&rk_vadd_req_msgtype,      &rk_vadd_reply_msgtype,
                                                   &rk_vadd_buf_req_msgtype,  &rk_vadd_buf_reply_msgtype,
                                                   &rk_counter_add_msgtype,   &rk_counter_value_msgtype};

const rk_msg_type *rk_msg_type_find(const rk_kernel_desc *desc, const char *name) {
  const rk_msg_type *const *types = builtin_types;
  uint32_t n = (uint32_t)(sizeof builtin_types / sizeof builtin_types[0]), i;
  if (name == NULL) return NULL;
  if (desc) {
    types = desc->types;
    n = desc->types ? desc->n_types : 0;
  }
  for (i = 0; i < n; i++)
    if (types[i] && types[i]->name && strcmp(types[i]->name, name) == 0) return types[i];
  return NULL;
}
