"""A cheap smoke test of the load benchmark's driver (not the benchmark itself, which
``benches/load/run.sh`` runs): the response reader on both framings, the TTFB loop
against a loopback server, and the report's verdicts."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("load_driver", Path(__file__).with_name("driver.py"))
assert _spec and _spec.loader
driver = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(driver)

SSE = b"data: {}\n\ndata: [DONE]\n\n"


def _chunked(body: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:5], body[5:])) + b"0\r\n\r\n"


@pytest.fixture
def server() -> Iterator[int]:
    """Answers every request on a keep-alive connection, alternating the two framings."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            for i in range(20):
                buf = b""
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, body = buf.partition(b"\r\n\r\n")
                length = int(
                    next(
                        line.split(b":")[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    )
                )
                while len(body) < length:
                    body += conn.recv(65536)
                if i % 2:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(SSE))
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SSE) + SSE)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    thread.join(timeout=10)
    listener.close()


def test_ttfb_reads_both_framings(server: int) -> None:
    result = driver.ttfb("127.0.0.1", server, "/x", b"{}", "sk-ar-test", n=18, max_seconds=10, warmup=2)
    assert result["n"] == 18
    assert 0 < result["first_p50_us"] <= result["total_p50_us"]


def test_report_verdicts(tmp_path: Path) -> None:
    lines = [
        "direct_tput RESULT requests=200000 duration_us=10000000 p50_us=500 p99_us=900 non2xx=0",
        "gw_tput RESULT requests=50000 duration_us=10000000 p50_us=2000 p99_us=4000 non2xx=0",
        "gw_nometrics_tput RESULT requests=51000 duration_us=10000000 p50_us=2000 p99_us=4000 non2xx=0",
        "gw_nometrics_tput2 RESULT requests=50000 duration_us=10000000 p50_us=2000 p99_us=4000 non2xx=0",
        "gw_metrics_tput2 RESULT requests=49000 duration_us=10000000 p50_us=2000 p99_us=4000 non2xx=0",
        "direct_lat RESULT requests=50000 duration_us=10000000 p50_us=60 p99_us=120 non2xx=0",
        "gw_lat RESULT requests=20000 duration_us=10000000 p50_us=300 p99_us=700 non2xx=0",
        'gw_lat_cpu {"us_per_request": 240, "writer_us_per_request": 6.5}',
        'direct_ttfb {"n": 10, "first_p50_us": 80, "first_p99_us": 150, "total_p50_us": 90, "total_p99_us": 160}',
        'gw_ttfb {"n": 10, "first_p50_us": 900, "first_p99_us": 1500, "total_p50_us": 950, "total_p99_us": 1600}',
        'rss {"warm_kib": 60000, "mid_kib": 61000, "end_kib": 61500, "before_requests": 100}',
        'writer_rss {"warm_kib": 30000, "mid_kib": 31000, "end_kib": 41000}',
        # [B], the comparison placement: far over the targets, and still not a failure.
        "direct_lat_b RESULT requests=90000 duration_us=10000000 p50_us=30 p99_us=60 non2xx=0",
        "gw_lat_b RESULT requests=9000 duration_us=10000000 p50_us=900 p99_us=2000 non2xx=0",
        'direct_ttfb_b {"n": 10, "first_p50_us": 40, "first_p99_us": 90, "total_p50_us": 45, "total_p99_us": 95}',
        'gw_ttfb_b {"n": 10, "first_p50_us": 40, "first_p99_us": 90, "total_p50_us": 45, "total_p99_us": 95}',
    ]
    results = tmp_path / "results.txt"
    results.write_text("\n".join(lines) + "\n")
    table, ok = driver.report(driver.parse_results(results))
    assert not ok
    rows = {line.split("  ")[0]: line for line in table.splitlines()}
    assert rows["JSON req/s @16 conns [T]"].endswith("PASS")
    assert "0.250x" in rows["JSON req/s @16 conns [T]"]
    metrics = rows["JSON req/s @16 conns, metrics off | on [T]"]
    assert "5,050 (off)" in metrics and "4,950 (on)" in metrics and "0.980x" in metrics
    assert metrics.endswith("PASS")  # within 3%
    assert rows["latency p50 @1 conn (us) [A]"].endswith("PASS")  # +240 us
    assert rows["latency p99 @1 conn (us) [A]"].endswith("PASS")  # +580 us
    assert rows["first streamed byte p50 (us) [A]"].endswith("FAIL")  # +820 us
    assert rows["worker RSS (MiB) warm/mid/end [T]"].endswith("PASS")
    assert "80% of its p50" in rows["gateway CPU per request @1 conn (us) [A]"]
    assert "6.5" in rows["usage writer CPU per request @1 conn (us) [A]"]
    assert rows["usage writer RSS (MiB) warm/mid/end [T]"].endswith("FAIL")  # +9.8 MiB in the 2nd half
    # [B] is reported with its figures, and judged nowhere.
    assert "+870 us" in rows["latency p50 @1 conn (us) [B]"]
    assert rows["latency p50 @1 conn (us) [B]"].split()[-2:] == ["judged)", "-"]
    assert "+0 us" in rows["first streamed byte p50 (us) [B]"]
    # The placements used are spelled out under the table.
    assert "  [A] nginx on CPU 0 beside the gateway" in table
    assert "  [B] nginx on CPU 1 beside wrk" in table


def test_report_without_the_comparison_placement(tmp_path: Path) -> None:
    """A run of some phases only reports what it measured."""
    results = tmp_path / "results.txt"
    results.write_text(
        "direct_lat RESULT requests=5 duration_us=1 p50_us=60 p99_us=120 non2xx=0\n"
        "gw_lat RESULT requests=5 duration_us=1 p50_us=500 p99_us=700 non2xx=0\n"
    )
    table, ok = driver.report(driver.parse_results(results))
    assert not ok  # +440 us p50
    assert "[B]" not in table and "[T]" not in table


def test_report_fails_metrics_costing_more_than_3_percent(tmp_path: Path) -> None:
    results = tmp_path / "results.txt"
    results.write_text(
        "gw_tput RESULT requests=9600 duration_us=2000000 p50_us=1 p99_us=1 non2xx=0\n"
        "gw_nometrics_tput RESULT requests=10000 duration_us=2000000 p50_us=1 p99_us=1 non2xx=0\n"
    )
    table, ok = driver.report(driver.parse_results(results))
    assert not ok
    assert "0.960x on/off" in table


def test_cpu_of_a_process_counts_its_threads() -> None:
    import os
    import time

    before = driver.cpu_ns(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert driver.cpu_ns(os.getpid()) - before >= 40_000_000
