/* metrics.c — the optional HTTP /metrics endpoint (rk_runtime_options.metrics_listen): a small
 * HTTP/1.0-style server on the runtime's libuv loop that answers GET /metrics with
 * rk_runtime_stats_prometheus's text, one request per connection (Connection: close).
 *
 * Everything here runs on the loop's thread (the service thread, or the application's loop), so
 * the server and its connections need no lock; the text itself is built with the runtime's lock
 * as rk_runtime_stats_json is. A request larger than RK_METRICS_REQ_MAX, or that has not arrived
 * whole within RK_METRICS_IDLE_MS, is answered with an error (or dropped) and closed, so a stuck
 * client holds one small buffer for a bounded time. Closing (runtime destroy) closes the server and
 * every open connection; their memory goes in the close callbacks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/internal.h"

#define RK_METRICS_REQ_MAX 8192
#define RK_METRICS_IDLE_MS 5000

typedef struct mclient mclient;

struct rk__metrics {
  uv_tcp_t server;
  rk_runtime *rt;  /* NULL once closing */
  mclient *clients; /* open connections, doubly linked */
  unsigned open;   /* handles not yet closed (server, and each client's tcp and timer) */
  char address[80];
};

struct mclient {
  uv_tcp_t tcp;
  uv_timer_t timer; /* the idle bound */
  uv_write_t wr;
  rk__metrics *m;
  mclient *prev, *next;
  char *resp;
  size_t n;
  int closing, writing;
  char req[RK_METRICS_REQ_MAX];
};

static void m_release(rk__metrics *m) {
  if (--m->open == 0) free(m);
}

static void on_server_closed(uv_handle_t *h) { m_release((rk__metrics *)h->data); }

static void on_client_handle_closed(uv_handle_t *h) {
  mclient *c = (mclient *)h->data;
  rk__metrics *m = c->m;
  if (--c->closing == 0) { /* both handles (tcp and timer) are closed */
    free(c->resp);
    free(c);
  }
  m_release(m);
}

static void client_close(mclient *c) {
  rk__metrics *m = c->m;
  if (c->closing) return;
  c->closing = 2;
  if (c->prev)
    c->prev->next = c->next;
  else
    m->clients = c->next;
  if (c->next) c->next->prev = c->prev;
  uv_close((uv_handle_t *)&c->tcp, on_client_handle_closed);
  uv_close((uv_handle_t *)&c->timer, on_client_handle_closed);
}

static void on_written(uv_write_t *w, int status) {
  mclient *c = (mclient *)w->data;
  (void)status;
  c->writing = 0;
  client_close(c); /* one request per connection (closing twice is a no-op) */
}

static void respond(mclient *c, const char *status, const char *ctype, const char *body, size_t blen) {
  char head[256];
  int hl = snprintf(head, sizeof head,
                    "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status,
                    ctype, blen);
  uv_buf_t b;
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_timer_stop(&c->timer);
  c->resp = (char *)malloc((size_t)hl + blen);
  if (c->resp == NULL) {
    client_close(c);
    return;
  }
  memcpy(c->resp, head, (size_t)hl);
  if (blen) memcpy(c->resp + hl, body, blen);
  b = uv_buf_init(c->resp, (unsigned)((size_t)hl + blen));
  c->wr.data = c;
  c->writing = 1;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0) {
    c->writing = 0;
    client_close(c);
  }
}

static void respond_text(mclient *c, const char *status, const char *text) {
  respond(c, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* A whole request head is in c->req[0..n): answer it. */
static void handle_request(mclient *c) {
  rk_runtime *rt = c->m->rt;
  char method[8], path[128];
  char *body;
  int need, got;
  if (sscanf(c->req, "%7s %127s", method, path) != 2) {
    respond_text(c, "400 Bad Request", "bad request\n");
    return;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    respond_text(c, "405 Method Not Allowed", "only GET /metrics\n");
    return;
  }
  if (strcmp(path, "/metrics") != 0 && strncmp(path, "/metrics?", 9) != 0) {
    respond_text(c, "404 Not Found", "not found: the endpoint is /metrics\n");
    return;
  }
  need = rk_runtime_stats_prometheus(rt, NULL, 0);
  for (;;) {
    if (need < 0 || (body = (char *)malloc((size_t)need + 1)) == NULL) {
      respond_text(c, "500 Internal Server Error", "out of memory\n");
      return;
    }
    got = rk_runtime_stats_prometheus(rt, body, (size_t)need + 1);
    if (got >= 0 && got <= need) break;
    free(body); /* a kernel was launched in between: again, bigger */
    need = got;
  }
  respond(c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body,
          strcmp(method, "HEAD") == 0 ? 0 : (size_t)got);
  free(body);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  mclient *c = (mclient *)h->data;
  (void)suggested;
  *buf = uv_buf_init(c->req + c->n, (unsigned)(sizeof c->req - 1 - c->n));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  mclient *c = (mclient *)s->data;
  (void)buf;
  if (nread < 0) {
    client_close(c);
    return;
  }
  c->n += (size_t)nread;
  c->req[c->n] = '\0';
  if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
    handle_request(c);
  } else if (c->n >= sizeof c->req - 1) {
    respond_text(c, "431 Request Header Fields Too Large", "request too large\n");
  }
}

static void on_idle(uv_timer_t *t) { client_close((mclient *)t->data); }

static void on_connection(uv_stream_t *server, int status) {
  rk__metrics *m = (rk__metrics *)server->data;
  mclient *c;
  if (status < 0 || m->rt == NULL) return;
  c = (mclient *)calloc(1, sizeof *c);
  if (c == NULL) return; /* the connection waits in the backlog; the next one is tried later */
  c->m = m;
  uv_tcp_init(server->loop, &c->tcp);
  uv_timer_init(server->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  m->open += 2;
  c->next = m->clients;
  if (c->next) c->next->prev = c;
  m->clients = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    client_close(c);
    return;
  }
  uv_timer_start(&c->timer, on_idle, RK_METRICS_IDLE_MS, 0);
}

/* "host:port", "[v6]:port", "localhost:port" -> a socket address. 0 or RK_EINVAL. */
static int parse_address(const char *s, struct sockaddr_storage *sa, char *why, size_t why_len) {
  char host[64];
  const char *colon, *port_s;
  char *end;
  long port;
  size_t hl;
  if (s[0] == '[') {
    const char *close = strchr(s, ']');
    if (close == NULL || close[1] != ':') {
      snprintf(why, why_len, "\"%s\": an IPv6 address is written [addr]:port", s);
      return RK_EINVAL;
    }
    hl = (size_t)(close - s - 1);
    if (hl >= sizeof host) hl = sizeof host - 1;
    memcpy(host, s + 1, hl);
    host[hl] = '\0';
    port_s = close + 2;
  } else {
    colon = strrchr(s, ':');
    if (colon == NULL) {
      snprintf(why, why_len, "\"%s\" is not host:port", s);
      return RK_EINVAL;
    }
    hl = (size_t)(colon - s);
    if (hl >= sizeof host) {
      snprintf(why, why_len, "\"%s\": host too long", s);
      return RK_EINVAL;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    port_s = colon + 1;
  }
  port = strtol(port_s, &end, 10);
  if (*port_s == '\0' || *end != '\0' || port < 0 || port > 65535) {
    snprintf(why, why_len, "\"%s\": the port is not a number 0..65535", s);
    return RK_EINVAL;
  }
  if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
  if (host[0] == '\0' || strcmp(host, "*") == 0) snprintf(host, sizeof host, "0.0.0.0");
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)sa) == 0) return RK_OK;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)sa) == 0) return RK_OK;
  snprintf(why, why_len, "\"%s\": \"%s\" is not an IP address (or localhost)", s, host);
  return RK_EINVAL;
}

int rk__metrics_start(rk_runtime *rt, const char *listen, char *why, size_t why_len) {
  struct sockaddr_storage sa, bound;
  int rc, salen = (int)sizeof bound;
  rk__metrics *m;
  memset(&sa, 0, sizeof sa);
  if ((rc = parse_address(listen, &sa, why, why_len)) != RK_OK) return rc;
  m = (rk__metrics *)rk__calloc(1, sizeof *m);
  if (m == NULL) {
    snprintf(why, why_len, "out of memory");
    return RK_ENOMEM;
  }
  m->rt = rt;
  if ((rc = uv_tcp_init(rt->loop, &m->server)) != 0) {
    snprintf(why, why_len, "\"%s\": %s", listen, uv_strerror(rc));
    free(m);
    return RK_ESYS;
  }
  m->server.data = m;
  m->open = 1;
  rt->metrics = m; /* from here on closed by rk__metrics_close, on success or not */
  if ((rc = uv_tcp_bind(&m->server, (const struct sockaddr *)&sa, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&m->server, 64, on_connection)) != 0) {
    snprintf(why, why_len, "cannot listen on \"%s\": %s", listen, uv_strerror(rc));
    return RK_ESYS;
  }
  if (uv_tcp_getsockname(&m->server, (struct sockaddr *)&bound, &salen) == 0) {
    char ip[64] = "";
    if (bound.ss_family == AF_INET6) {
      uv_ip6_name((const struct sockaddr_in6 *)&bound, ip, sizeof ip);
      snprintf(m->address, sizeof m->address, "[%s]:%u", ip, ntohs(((struct sockaddr_in6 *)&bound)->sin6_port));
    } else {
      uv_ip4_name((const struct sockaddr_in *)&bound, ip, sizeof ip);
      snprintf(m->address, sizeof m->address, "%s:%u", ip, ntohs(((struct sockaddr_in *)&bound)->sin_port));
    }
  }
  return RK_OK;
}

/* On the loop's thread. After it, no callback touches rt. */
void rk__metrics_close(rk__metrics *m) {
  if (m == NULL) return;
  if (m->rt) {
    m->rt = NULL;
    uv_close((uv_handle_t *)&m->server, on_server_closed);
  }
  while (m->clients) client_close(m->clients);
}

void rk__metrics_unref(rk__metrics *m) {
  if (m && m->rt) uv_unref((uv_handle_t *)&m->server);
}

int rk_runtime_metrics_address(rk_runtime *rt, char *buf, size_t len) {
  if (rt == NULL || (buf == NULL && len > 0)) return RK_EINVAL;
  if (len) buf[0] = '\0';
  if (rt->metrics == NULL || rt->metrics->address[0] == '\0') return RK_ENOENT;
  return snprintf(buf, len, "%s", rt->metrics->address);
}
