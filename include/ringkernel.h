/** @file ringkernel.h — the umbrella header of ringkernel, an embeddable C library for GPU-native
 * persistent actors. Include this one header; it pulls in every public part. */
#ifndef RINGKERNEL_H
#define RINGKERNEL_H

#include "ringkernel/common.h"
#include "ringkernel/version.h"
#include "ringkernel/error.h"
#include "ringkernel/atomic.h"
#include "ringkernel/hlc.h"
#include "ringkernel/envelope.h"
#include "ringkernel/ring.h"
#include "ringkernel/queue.h"
#include "ringkernel/control.h"
#include "ringkernel/message.h"
#include "ringkernel/kernel.h"
#include "ringkernel/builtins.h"
#include "ringkernel/runtime.h"
#include "ringkernel/graph.h"
#include "ringkernel/buffer.h"

#endif /* RINGKERNEL_H */
