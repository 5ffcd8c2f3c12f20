/* token.c — a caller's 64-bit token per message (rk_send_token), echoed with its reply.
 *
 * The envelope has no field left for a token (origin is K2K's), so the token never travels: the
 * host keeps it, per kernel, in a table keyed by the message id, from before the message is sent
 * (the id is taken first, so a reply can never arrive before its entry) until the reply's token is
 * taken (rk_recv_token, rk_msg_token) or the kernel is freed. The table is an open-addressing hash
 * of (id, token) pairs with linear probing and backward-shift deletion (no tombstones), under a
 * mutex of its own; it is allocated at a kernel's first token send. Message ids are never 0
 * (rk__msg_id counts from 1), so 0 marks an empty slot. */
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

struct rk__tokens {
  uv_mutex_t lock;
  uint64_t *ids;  /* 0: empty */
  uint64_t *vals;
  size_t cap;     /* a power of two */
  size_t n;
};

static size_t slot_of(uint64_t id, size_t mask) {
  id ^= id >> 33;
  id *= 0xff51afd7ed558ccdull;
  id ^= id >> 33;
  return (size_t)id & mask;
}

static int grow(struct rk__tokens *t) {
  size_t cap = t->cap ? t->cap * 2 : 64, i, j;
  uint64_t *ids = (uint64_t *)rk__calloc(cap, sizeof *ids), *vals = (uint64_t *)rk__calloc(cap, sizeof *vals);
  if (ids == NULL || vals == NULL) {
    free(ids);
    free(vals);
    return RK_ENOMEM;
  }
  for (i = 0; i < t->cap; i++) {
    if (t->ids[i] == 0) continue;
    for (j = slot_of(t->ids[i], cap - 1); ids[j]; j = (j + 1) & (cap - 1)) {
    }
    ids[j] = t->ids[i];
    vals[j] = t->vals[i];
  }
  free(t->ids);
  free(t->vals);
  t->ids = ids;
  t->vals = vals;
  t->cap = cap;
  return RK_OK;
}

static int put(struct rk__tokens *t, uint64_t id, uint64_t token) {
  size_t j;
  int rc = RK_OK;
  uv_mutex_lock(&t->lock);
  if ((t->n + 1) * 2 > t->cap) rc = grow(t); /* load at most 1/2 */
  if (rc == RK_OK) {
    for (j = slot_of(id, t->cap - 1); t->ids[j]; j = (j + 1) & (t->cap - 1)) {
    }
    t->ids[j] = id;
    t->vals[j] = token;
    t->n++;
  }
  uv_mutex_unlock(&t->lock);
  return rc;
}

/* Remove id's entry; 1 (and *token) when there was one. */
static int take(struct rk__tokens *t, uint64_t id, uint64_t *token) {
  size_t j, k, mask;
  int found = 0;
  if (id == 0) return 0;
  uv_mutex_lock(&t->lock);
  if (t->cap) {
    mask = t->cap - 1;
    for (j = slot_of(id, mask); t->ids[j] && t->ids[j] != id; j = (j + 1) & mask) {
    }
    if (t->ids[j] == id) {
      found = 1;
      *token = t->vals[j];
      t->ids[j] = 0;
      t->n--;
      /* backward shift: move later members of the run into the hole when their home allows */
      for (k = (j + 1) & mask; t->ids[k]; k = (k + 1) & mask) {
        size_t home = slot_of(t->ids[k], mask);
        if (((k - home) & mask) >= ((k - j) & mask)) {
          t->ids[j] = t->ids[k];
          t->vals[j] = t->vals[k];
          t->ids[k] = 0;
          j = k;
        }
      }
    }
  }
  uv_mutex_unlock(&t->lock);
  return found;
}

void rk__tokens_free(struct rk__tokens *t) {
  if (t == NULL) return;
  uv_mutex_destroy(&t->lock);
  free(t->ids);
  free(t->vals);
  free(t);
}

static struct rk__tokens *tokens_of(rk_kernel *k) {
  struct rk__tokens *t = __atomic_load_n(&k->tokens, __ATOMIC_ACQUIRE), *fresh;
  if (t) return t;
  fresh = (struct rk__tokens *)rk__calloc(1, sizeof *fresh);
  if (fresh == NULL) return NULL;
  uv_mutex_init(&fresh->lock);
  if (__atomic_compare_exchange_n(&k->tokens, &t, fresh, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return fresh;
  rk__tokens_free(fresh); /* another thread's table won */
  return t;
}

static int send_token(rk_kernel *k, int keyed, uint64_t key, uint64_t token, uint32_t type, const void *payload,
                      uint32_t len, uint32_t flags, uint64_t *msg_id) {
  struct rk__tokens *t = NULL;
  uint64_t id, unused;
  int rc, want = !(flags & RK_SEND_NO_REPLY); /* no reply: nothing to echo, nothing kept */
  if (k == NULL) return RK_EINVAL;
  rk__error_clear(k->rt);
  if (want && (t = tokens_of(k)) == NULL) return rk__fail(k->rt, RK_ENOMEM, "send to %s: no memory for the token table", k->name);
  id = rk__msg_id(k->rt);
  if (want && (rc = put(t, id, token)) != RK_OK) /* t: tokens_of's acquire load or its own CAS */
    return rk__fail(k->rt, rc, "send to %s: no memory for the token table", k->name);
  rc = rk__send_id_key(k, keyed, key, type, payload, len, flags, id);
  if (rc != RK_OK) {
    if (want) (void)take(t, id, &unused); /* nothing was sent */
    return rc;
  }
  if (msg_id) *msg_id = id;
  return RK_OK;
}

int rk_send_token(rk_kernel *k, uint64_t token, uint32_t type, const void *payload, uint32_t len, uint32_t flags,
                  uint64_t *msg_id) {
  return send_token(k, 0, 0, token, type, payload, len, flags, msg_id);
}

int rk_send_key_token(rk_kernel *k, uint64_t key, uint64_t token, uint32_t type, const void *payload, uint32_t len,
                      uint32_t flags, uint64_t *msg_id) {
  return send_token(k, 1, key, token, type, payload, len, flags, msg_id);
}

int rk_msg_token(rk_kernel *k, const rk_msg *reply, uint64_t *token) {
  struct rk__tokens *t;
  uint64_t v = 0;
  int found;
  if (k == NULL || reply == NULL) return RK_EINVAL;
  t = __atomic_load_n(&k->tokens, __ATOMIC_ACQUIRE);
  found = t && (reply->env.flags & RK_ENV_F_REPLY) && take(t, reply->env.correlation_id, &v);
  if (token) *token = v;
  return found;
}

int rk_recv_token(rk_kernel *k, rk_msg *msg, void *buf, uint32_t buf_len, int64_t timeout_ns, uint64_t *token) {
  int rc;
  if (token) *token = 0;
  rc = rk_recv(k, msg, buf, buf_len, timeout_ns);
  if (rc == RK_OK) (void)rk_msg_token(k, msg, token);
  return rc;
}
