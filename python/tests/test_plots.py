"""make plots: scripts/plots.py renders bench results into well-formed SVG charts."""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "scripts", "plots.py")


def write(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
        f.write("{torn line\n")  # a damaged line is skipped, not fatal


def rec(bench, impl, metric, value):
    return {"bench": bench, "impl": impl, "metric": metric, "value": value, "unit": "", "n": 1, "machine": "test"}


def test_plots_from_results(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    for day, scale in (("2026-01-01", 1.0), ("2026-01-02", 1.2)):
        write(res / ("cpu-%s.jsonl" % day), [
            rec("rtt.echo", "ringkernel.cpu", "rtt_p50_ns", 450 * scale),
            rec("rtt.echo", "ringkernel.cpu", "rtt_p99_ns", 700 * scale),
            rec("rtt.echo", "condvar", "rtt_p50_ns", 8000),
            rec("rtt.echo", "condvar", "rtt_p99_ns", 15000),
            rec("ring.spsc", "ringkernel", "ops_per_s", 1.8e7 * scale),
            rec("ring.spsc", "mutex", "ops_per_s", 5e6),
        ])
    out = tmp_path / "plots"
    p = subprocess.run([sys.executable, SCRIPT, "--results", str(res), "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for name in ("latency.svg", "throughput.svg", "runs.svg"):
        root = ET.parse(out / name).getroot()
        assert root.tag.endswith("svg")
    text = (out / "latency.svg").read_text()
    assert "ringkernel.cpu" in text and "condvar" in text
    assert "cpu-2026-01-02" in (out / "runs.svg").read_text()
    # deterministic: the same inputs give the same files
    first = (out / "runs.svg").read_text()
    subprocess.run([sys.executable, SCRIPT, "--results", str(res), "--out", str(out)], check=True, capture_output=True)
    assert (out / "runs.svg").read_text() == first


def test_plots_no_results(tmp_path):
    p = subprocess.run([sys.executable, SCRIPT, "--results", str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 1 and "no results" in p.stderr

