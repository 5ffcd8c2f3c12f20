/** @file ringkernel.h — the umbrella header of ringkernel, an embeddable C library for GPU-native
 * persistent actors. Include this one header: it is the application API (runtimes, kernels and
 * the kernel dialect, messages, buffers, graphs, clocks, errors). The runtime's internals (rings,
 * atomics, the control block) are in <ringkernel/internals.h>, for the code that needs them. */
#ifndef RINGKERNEL_H
#define RINGKERNEL_H

#include "ringkernel/common.h"
#include "ringkernel/version.h"
#include "ringkernel/error.h"
#include "ringkernel/hlc.h"
#include "ringkernel/envelope.h"
#include "ringkernel/lifecycle.h"
#include "ringkernel/message.h"
#include "ringkernel/kernel.h"
#include "ringkernel/builtins.h"
#include "ringkernel/runtime.h"
#include "ringkernel/graph.h"
#include "ringkernel/buffer.h"

#endif /* RINGKERNEL_H */
