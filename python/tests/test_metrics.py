"""Monitoring: the Prometheus text (rk_runtime_stats_prometheus) and the HTTP /metrics endpoint,
scraped with a real HTTP client (urllib) and parsed by prometheus_client's parser."""
import threading
import urllib.error
import urllib.request

import pytest

import ringkernel as rk
from ringkernel import errors

parser = pytest.importorskip("prometheus_client.parser")


def families(text):
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def sample(fams, family, name, **labels):
    for s in fams[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((family, name, labels))


def test_prometheus_text_parses(rt):
    with rt.launch("echo", activate=True, lanes=2) as k:
        for i in range(10):
            k.call(b"x", type_id=5, timeout=5)
        f = families(rt.prometheus())
        kid = str(k.id)
        assert f["rk_runtime_info"].type == "gauge"
        assert sample(f, "rk_runtime_info", "rk_runtime_info", backend="cpu") == 1
        assert sample(f, "rk_runtime_kernels", "rk_runtime_kernels") == 1
        assert f["rk_kernel_sent"].type == "counter"
        assert sample(f, "rk_kernel_sent", "rk_kernel_sent_total", kernel="echo", id=kid) == 10
        assert sample(f, "rk_kernel_state", "rk_kernel_state", kernel="echo", state="ACTIVE") == 1
        assert sample(f, "rk_kernel_state", "rk_kernel_state", kernel="echo", state="FAULTED") == 0
        assert sample(f, "rk_kernel_inbox_depth", "rk_kernel_inbox_depth", kernel="echo", lane="1") == 0
        h = f["rk_kernel_latency_seconds"]
        assert h.type == "histogram"
        assert sample(f, "rk_kernel_latency_seconds", "rk_kernel_latency_seconds_count", kernel="echo") == 10
        assert sample(f, "rk_kernel_latency_seconds", "rk_kernel_latency_seconds_bucket", kernel="echo", le="+Inf") == 10
        assert 0 < sample(f, "rk_kernel_latency_seconds", "rk_kernel_latency_seconds_sum", kernel="echo") < 10
        buckets = [s for s in h.samples if s.name.endswith("_bucket")]
        assert len(buckets) == 48
        values = [s.value for s in buckets]
        assert values == sorted(values)  # cumulative


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def test_metrics_endpoint_concurrent_scrapes(cache_dir):
    with rk.Runtime(backend="cpu", cache_dir=cache_dir, metrics_listen="127.0.0.1:0") as rt:
        assert rt.metrics_address.startswith("127.0.0.1:")
        url = rt.metrics_url
        k = rt.launch("counter", activate=True)
        stop = threading.Event()
        results, problems = [], []

        def scraper():
            # at least 5 scrapes each, counted per thread: the shared list's length let a thread
            # stop early once the others had made 5 (14 of 15 seen on a loaded machine)
            mine = 0
            while not stop.is_set() or mine < 5:
                try:
                    f = families(scrape(url))
                    results.append(sample(f, "rk_kernel_sent", "rk_kernel_sent_total", kernel="counter"))
                    mine += 1
                except Exception as e:  # pragma: no cover - reported below
                    problems.append(e)
                    return

        ts = [threading.Thread(target=scraper) for _ in range(3)]
        for t in ts:
            t.start()
        for _ in range(500):
            k.call(rk.CounterAdd(delta=1), reply_type=rk.CounterValue, timeout=10)
        stop.set()
        for t in ts:
            t.join()
        assert not problems
        assert len(results) >= 15 and max(results) <= 500
        f = families(scrape(url))
        assert sample(f, "rk_kernel_sent", "rk_kernel_sent_total", kernel="counter") == 500
        assert sample(f, "rk_kernel_received", "rk_kernel_received_total", kernel="counter") == 500
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=10)
        assert ei.value.code == 404


def test_metrics_bad_address_is_a_create_error():
    with pytest.raises(errors.InvalidArgumentError) as ei:
        rk.Runtime(backend="cpu", metrics_listen="not-an-address")
    assert "metrics_listen" in ei.value.detail and "not-an-address" in ei.value.detail


def test_metrics_off_by_default(rt):
    assert rt.metrics_address is None and rt.metrics_url is None
