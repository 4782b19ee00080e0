"""Helpers for ``benches/load/run.sh``: time to first streamed byte, RSS, the report.

    driver.py ttfb HOST PORT PATH BODY_FILE KEY [--n N] [--max-seconds S]
        One keep-alive connection, N sequential requests; prints a JSON line with the
        p50/p90/p99 time (µs) from sending the request to the first byte of the
        response body (the first SSE event), and to the end of the response.
    driver.py rss PID
        The resident set size of a process in KiB (VmRSS).
    driver.py cpu PID
        The CPU time a process has used so far, all its threads, in ns (schedstat).
    driver.py report RESULTS_FILE
        The table of figures, ratios and targets from the results run.sh gathered.

Standard library only, so it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from pathlib import Path

TARGETS = {
    "throughput_rps": 4500.0,
    "added_p50_us": 300.0,
    "added_p99_us": 1000.0,
    "added_ttfb_us": 500.0,
    "metrics_rps_ratio": 0.97,
}


PLACEMENTS = {
    "T": "nginx on CPU 1 beside wrk, CPU 0 the gateway's alone",
    "A": "nginx on CPU 0 beside the gateway: direct and gateway cross the client/server CPU boundary alike (judged)",
    "B": "nginx on CPU 1 beside wrk: the direct path never leaves CPU 1, the gateway path crosses CPUs "
    "4 times (not judged)",
}
"""Where nginx ran for the rows tagged so (run.sh's header explains the choice)."""


class ResponseError(Exception):
    pass


def read_response(sock: socket.socket, start_ns: int) -> tuple[int, int, int, bytes]:
    """Read one HTTP/1.1 response; (status, ns to first body byte, ns to the end, raw body)."""
    buf = b""
    head_end = -1
    status = 0
    length: int | None = None
    chunked = False
    first_body_ns = 0
    while True:
        data = sock.recv(262144)
        now = time.perf_counter_ns()
        if not data:
            raise ResponseError("connection closed mid-response")
        buf += data
        if head_end < 0:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            lines = buf[:head_end].decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            head_end += 4
        body = buf[head_end:]
        if body and not first_body_ns:
            first_body_ns = now
        if length is not None and len(body) >= length:
            return status, first_body_ns - start_ns, now - start_ns, body
        if chunked and body.endswith(b"0\r\n\r\n") and _chunked_complete(body):
            return status, first_body_ns - start_ns, now - start_ns, body
        if length is None and not chunked and head_end >= 0 and status in (204, 304):
            return status, now - start_ns, now - start_ns, body


def _chunked_complete(body: bytes) -> bool:
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            return False
        size = int(body[pos:eol].split(b";")[0], 16)
        if size == 0:
            return len(body) >= eol + 4 and body.endswith(b"\r\n\r\n")
        pos = eol + 2 + size + 2
        if pos > len(body):
            return False


def ttfb(
    host: str, port: int, path: str, body: bytes, key: str, n: int, max_seconds: float, warmup: int = 200
) -> dict[str, float]:
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    first: list[int] = []
    total: list[int] = []
    reconnects = 0
    deadline = time.monotonic() + max_seconds

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    sock = connect()
    try:
        for i in range(warmup + n):
            if time.monotonic() > deadline:
                break
            start = time.perf_counter_ns()
            try:
                sock.sendall(request)
                status, first_ns, total_ns, raw = read_response(sock, start)
            except (ResponseError, ConnectionError) as exc:
                # The server closed the keep-alive connection: count it, reconnect, go on
                # (the sample is dropped; a few are tolerated, not a habit).
                reconnects += 1
                if reconnects > 10:
                    raise ResponseError(f"the server keeps closing the connection ({exc})") from exc
                sock.close()
                sock = connect()
                continue
            if status != 200 or b"[DONE]" not in raw:
                raise ResponseError(f"status {status}, body {raw[:200]!r}")
            if i >= warmup:
                first.append(first_ns)
                total.append(total_ns)
    finally:
        sock.close()
    if not first:
        raise ResponseError("no measurement fitted in the time allowed")
    return {
        "n": len(first),
        "reconnects": reconnects,
        "first_p50_us": _pct(first, 50) / 1000,
        "first_p90_us": _pct(first, 90) / 1000,
        "first_p99_us": _pct(first, 99) / 1000,
        "total_p50_us": _pct(total, 50) / 1000,
        "total_p99_us": _pct(total, 99) / 1000,
    }


def _pct(values: list[int], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return float(ordered[k])


def cpu_ns(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # a thread that ended meanwhile
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ResponseError(f"no VmRSS for {pid}")


# ------------------------------------------------------------------ report


def parse_results(path: Path) -> dict[str, dict[str, float]]:
    """Lines ``NAME key=value ...`` (wrk's RESULT lines, prefixed) or ``NAME {json}``."""
    out: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith("{"):
            out[name] = {k: float(v) for k, v in json.loads(rest).items()}
            continue
        values = {}
        for item in rest.removeprefix("RESULT").split():
            k, _, v = item.partition("=")
            values[k] = float(v)
        out[name] = values
    return out


def rps(r: dict[str, float]) -> float:
    return r["requests"] / (r["duration_us"] / 1e6)


def rps_of(runs: list[dict[str, float]]) -> float:
    """The requests per second of several runs taken together."""
    return sum(r["requests"] for r in runs) / (sum(r["duration_us"] for r in runs) / 1e6)


METRICS_ON = ("gw_tput", "gw_metrics_tput2")
METRICS_OFF = ("gw_nometrics_tput", "gw_nometrics_tput2")
"""The throughput runs of the gateway with metrics on and off (metrics_enabled), in
the order on, off, off, on: what drifts during the phase weighs on both alike."""


def report(results: dict[str, dict[str, float]]) -> tuple[str, bool]:
    rows: list[tuple[str, str, str, str, str, str]] = []
    ok = True

    def row(metric: str, direct: str, gw: str, rel: str, target: str, passed: bool | None) -> None:
        nonlocal ok
        if passed is False:
            ok = False
        rows.append((metric, direct, gw, rel, target, "-" if passed is None else ("PASS" if passed else "FAIL")))

    for name in (
        "direct_tput",
        "gw_tput",
        "direct_lat",
        "gw_lat",
        "direct_lat_b",
        "gw_lat_b",
        "direct_stream_tput",
        "gw_stream_tput",
        *METRICS_ON,
        *METRICS_OFF,
        "long",
    ):
        r = results.get(name)
        if r and (r.get("non2xx", 0) or r.get("connect_errors", 0) or r.get("read_errors", 0) or r.get("timeouts", 0)):
            ok = False
            rows.append((f"ERRORS in {name}", "", "", json.dumps(r), "0", "FAIL"))

    if "direct_tput" in results and "gw_tput" in results:
        d_rps, g_rps = rps(results["direct_tput"]), rps(results["gw_tput"])
        row(
            "JSON req/s @16 conns [T]",
            f"{d_rps:,.0f}",
            f"{g_rps:,.0f}",
            f"{g_rps / d_rps:.3f}x",
            f">= {TARGETS['throughput_rps']:,.0f}",
            g_rps >= TARGETS["throughput_rps"],
        )
    on = [results[n] for n in METRICS_ON if n in results]
    off = [results[n] for n in METRICS_OFF if n in results]
    if on and off:
        on_rps, off_rps = rps_of(on), rps_of(off)
        ratio = TARGETS["metrics_rps_ratio"]
        row(
            "JSON req/s @16 conns, metrics off | on [T]",
            f"{off_rps:,.0f} (off)",
            f"{on_rps:,.0f} (on)",
            f"{on_rps / off_rps:.3f}x on/off",
            f"on >= {ratio:.2f}x off",
            on_rps >= ratio * off_rps,
        )
    if "direct_stream_tput" in results and "gw_stream_tput" in results:
        d_rps, g_rps = rps(results["direct_stream_tput"]), rps(results["gw_stream_tput"])
        row("SSE req/s @16 conns [T]", f"{d_rps:,.0f}", f"{g_rps:,.0f}", f"{g_rps / d_rps:.3f}x", "", None)
    # [A] is judged against the targets; [B] is shown for comparison only (see PLACEMENTS).
    for suffix, tag, judged in (("", "A", True), ("_b", "B", False)):
        lat_d, lat_g = results.get(f"direct_lat{suffix}"), results.get(f"gw_lat{suffix}")
        if lat_d and lat_g:
            for p, target in (("p50", TARGETS["added_p50_us"]), ("p99", TARGETS["added_p99_us"])):
                added = lat_g[f"{p}_us"] - lat_d[f"{p}_us"]
                row(
                    f"latency {p} @1 conn (us) [{tag}]",
                    f"{lat_d[f'{p}_us']:.0f}",
                    f"{lat_g[f'{p}_us']:.0f}",
                    f"{added:+.0f} us ({lat_g[f'{p}_us'] / lat_d[f'{p}_us']:.2f}x)",
                    f"added <= {target:.0f}" if judged else "(not judged)",
                    added <= target if judged else None,
                )
        cpu = results.get(f"gw_lat_cpu{suffix}")
        if cpu and lat_g:
            row(
                f"gateway CPU per request @1 conn (us) [{tag}]",
                "",
                f"{cpu['us_per_request']:.0f}",
                f"{cpu['us_per_request'] / lat_g['p50_us']:.0%} of its p50",
                "",
                None,
            )
            if "writer_us_per_request" in cpu:
                row(
                    f"usage writer CPU per request @1 conn (us) [{tag}]",
                    "",
                    f"{cpu['writer_us_per_request']:.1f}",
                    "",
                    "",
                    None,
                )
        ttfb_d, ttfb_g = results.get(f"direct_ttfb{suffix}"), results.get(f"gw_ttfb{suffix}")
        if ttfb_d and ttfb_g:
            added = ttfb_g["first_p50_us"] - ttfb_d["first_p50_us"]
            row(
                f"first streamed byte p50 (us) [{tag}]",
                f"{ttfb_d['first_p50_us']:.0f}",
                f"{ttfb_g['first_p50_us']:.0f}",
                f"{added:+.0f} us",
                f"added <= {TARGETS['added_ttfb_us']:.0f}" if judged else "(not judged)",
                added <= TARGETS["added_ttfb_us"] if judged else None,
            )
            row(
                f"first streamed byte p99 (us) [{tag}]",
                f"{ttfb_d['first_p99_us']:.0f}",
                f"{ttfb_g['first_p99_us']:.0f}",
                f"{ttfb_g['first_p99_us'] - ttfb_d['first_p99_us']:+.0f} us",
                "",
                None,
            )
            row(
                f"whole stream p50 (us) [{tag}]",
                f"{ttfb_d['total_p50_us']:.0f}",
                f"{ttfb_g['total_p50_us']:.0f}",
                f"{ttfb_g['total_p50_us'] - ttfb_d['total_p50_us']:+.0f} us",
                "",
                None,
            )
    if "rss" in results:
        r = results["rss"]
        long_requests = results.get("long", {}).get("requests", 0) + r.get("before_requests", 0)
        start, mid, end = r["warm_kib"], r["mid_kib"], r["end_kib"]
        growth = end - mid
        flat = growth <= max(2048.0, 0.02 * mid)
        row(
            "worker RSS (MiB) warm/mid/end [T]",
            "",
            f"{start / 1024:.1f} / {mid / 1024:.1f} / {end / 1024:.1f}",
            f"{growth / 1024:+.1f} MiB 2nd half",
            f"flat over {long_requests:,.0f} req",
            flat,
        )
        w = results.get("writer_rss")
        if w:
            growth = w["end_kib"] - w["mid_kib"]
            row(
                "usage writer RSS (MiB) warm/mid/end [T]",
                "",
                f"{w['warm_kib'] / 1024:.1f} / {w['mid_kib'] / 1024:.1f} / {w['end_kib'] / 1024:.1f}",
                f"{growth / 1024:+.1f} MiB 2nd half",
                "flat",
                growth <= max(2048.0, 0.02 * w["mid_kib"]),
            )
    headers = ("metric", "direct", "gateway", "gateway vs direct", "target", "")
    widths = [max(len(x[i]) for x in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    used = {r[0].rsplit("[", 1)[1].rstrip("]") for r in rows if r[0].endswith("]")}
    lines += ["", "placements (gateway always on CPU 0, wrk and driver.py always on CPU 1):"]
    lines += [f"  [{tag}] {text}" for tag, text in PLACEMENTS.items() if tag in used]
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ttfb")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("path")
    p.add_argument("body_file")
    p.add_argument("key")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--max-seconds", type=float, default=20.0)
    p = sub.add_parser("rss")
    p.add_argument("pid", type=int)
    p = sub.add_parser("cpu")
    p.add_argument("pid", type=int)
    p = sub.add_parser("report")
    p.add_argument("results")
    args = parser.parse_args(argv)
    if args.cmd == "ttfb":
        result = ttfb(
            args.host, args.port, args.path, Path(args.body_file).read_bytes(), args.key, args.n, args.max_seconds
        )
        print(json.dumps(result))
    elif args.cmd == "rss":
        print(rss_kib(args.pid))
    elif args.cmd == "cpu":
        print(cpu_ns(args.pid))
    else:
        table, ok = report(parse_results(Path(args.results)))
        print(table)
        print()
        print("all targets met" if ok else "SOME TARGETS MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
