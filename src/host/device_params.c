/* device_params.c — what a device lane is launched with: the batch geometry and the parameter
 * block (device/params.h). Shared by the CUDA backend and the test suite's device emulation
 * (tests/test_devemu.c), so the emulated lanes run with exactly the parameters a GPU gets. */
#include <string.h>

#include "device/params.h"
#include "host/internal.h"

int rk__dev_geometry(const rk_kernel *k, uint32_t *batch, size_t *smem) {
  uint32_t b = RK_DEV_MAX_BATCH;
  size_t limit = RK_DEV_SMEM_LIMIT - RK_DEV_STATIC_SMEM;
  /* the batch copy and the scratch, plus the loop's own static shared memory, must fit what a
   * block gets without an opt-in attribute; the batch shrinks to fit large slots */
  while (b > 1 && rk_dev_smem_size(b, k->slot_size, (uint32_t)k->desc.scratch_size) > limit) b--;
  *batch = b;
  *smem = rk_dev_smem_size(b, k->slot_size, (uint32_t)k->desc.scratch_size);
  if (*smem > limit)
    return rk__fail(k->rt, RK_EINVAL, "kernel %s: slot and scratch (fields .slot_size, .scratch_size) need %zu bytes "
                    "of shared memory (limit %zu)",
                    k->name, *smem, limit);
  return RK_OK;
}

size_t rk__dev_devmem_bytes(const rk_kernel *k) { return ((k->desc.state_size + 127) & ~(size_t)127) + 128; }

void rk__dev_params_fill(const rk_kernel *k, rk_dev_params *p, void *(*dev)(void *ctx, void *host), void *ctx,
                         uint8_t *devmem, uint32_t batch) {
  memset(p, 0, sizeof *p);
  p->ctl = (rk_control *)dev(ctx, k->ctl);
  p->inbox_base = (uint8_t *)dev(ctx, k->lane[0].inbox);
  p->outbox_base = (uint8_t *)dev(ctx, k->lane[0].outbox);
  /* lane i's rings are at base + i * stride in both address spaces */
  p->inbox_stride = k->lanes > 1 ? (uint64_t)((uint8_t *)k->lane[1].inbox - (uint8_t *)k->lane[0].inbox) : 0;
  p->outbox_stride = k->lanes > 1 ? (uint64_t)((uint8_t *)k->lane[1].outbox - (uint8_t *)k->lane[0].outbox) : 0;
  p->state = devmem;
  p->clock = (uint64_t *)(devmem + rk__dev_devmem_bytes(k) - 128); /* the last line */
  p->max_offset_us = k->rt->opts.max_offset_us ? k->rt->opts.max_offset_us : RK_HLC_DEFAULT_MAX_OFFSET_US;
  p->state_size = k->desc.state_size;
  p->lanes = k->lanes;
  p->kernel_id = k->id;
  p->slot_size = k->slot_size;
  p->batch = batch;
  p->scratch_size = (uint32_t)k->desc.scratch_size;
  p->buffers = rk__buffers_table(k->rt, &p->nbuffers); /* the lanes' address of the buffer table */
  /* K2K (graph.c): the graph's table, written before the launch (its own entry) */
  p->graph = (rk_dev_k2k_node *)(uintptr_t)k->dev_graph;
  p->graph_n = k->dev_graph_n;
  p->graph_node = k->dev_graph_node;
}
