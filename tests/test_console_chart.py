"""The console's chart module (``static/chart.js``) in a real Chromium: a known series
gives the expected points, axis labels, legend and read-out, by pointer and by
keyboard, and series differ by more than colour. The page is a console page of a
real server (its CSP applies to the chart too)."""

from __future__ import annotations

from typing import Any

import pytest

from agentrouter.console.app import STATIC
from agentrouter.console.assets import Assets
from tests.browser import ConsoleServer, Web

T0 = 1_699_999_200  # 2023-11-14 22:00 UTC, a whole hour: 03:30 on the 15th in Asia/Kolkata (+05:30)
HOUR = 3600
SPEC: dict[str, Any] = {
    "id": "t",
    "title": "Requests and failures",
    "kind": "line",
    "unit": "requests",
    "bucket": "hour",
    "step": HOUR,
    "x": [T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR],
    "series": [
        {"name": "Requests", "values": [0, 5, 10, None]},
        {"name": "Failures", "values": [0, 1, 2, 3]},
    ],
}
WIDTH = 640


def chart_page(web: Web, server: ConsoleServer) -> Any:
    """A console page (its CSP, its script) with the chart module loaded and an empty
    container of a known width."""
    page = web.page()
    page.goto("/sign-in")
    page.add_script_tag(url=Assets(STATIC).url("chart.js"))
    page.evaluate(
        """(width) => {
            const box = document.createElement("figure");
            box.id = "box";
            box.style.width = width + "px";  // CSSOM from a script of ours: allowed by the CSP
            box.style.padding = "0";
            box.style.border = "0";
            document.querySelector("main").appendChild(box);
        }""",
        WIDTH,
    )
    return page


def render(page: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """Render ``spec`` into the container; the geometry the chart reports."""
    return page.evaluate(  # type: ignore[no-any-return]
        """(spec) => {
            const c = AgentRouterChart.render(document.getElementById("box"), spec);
            window.lastChart = c;
            return {plot: c.plot, ticks: c.ticks, n: c.n,
                    width: +c.svg.getAttribute("width"), dataPlot: c.svg.getAttribute("data-plot")};
        }""",
        spec,
    )


def centres(page: Any, selector: str) -> list[list[float]]:
    return page.evaluate(  # type: ignore[no-any-return]
        """(sel) => [...document.querySelectorAll(sel)].map(e => {
            const b = e.getBBox(); return [b.x + b.width / 2, b.y + b.height / 2, +e.dataset.index];
        })""",
        selector,
    )


def readout(page: Any) -> str:
    return page.inner_text("#box .chart-readout")  # type: ignore[no-any-return]


def test_points_axes_and_legend_of_a_known_series(web: Web, console_server: ConsoleServer) -> None:
    page = chart_page(web, console_server)
    geo = render(page, SPEC)
    plot = geo["plot"]
    assert geo["width"] == WIDTH and geo["n"] == 4
    assert geo["dataPlot"] == f"{plot['left']} {plot['top']} {plot['width']} {plot['height']}"
    assert geo["ticks"] == [0, 5, 10]  # max 10: nice integer steps
    band = plot["width"] / 4

    def x(i: int) -> float:
        return float(plot["left"] + band * (i + 0.5))

    def y(v: float) -> float:
        return float(plot["top"] + plot["height"] - v / 10 * plot["height"])

    requests = centres(page, "#box .series.s0 .marker")
    assert [int(i) for *_, i in requests] == [0, 1, 2]  # the missing value has no point
    for (cx, cy, i), v in zip(requests, [0, 5, 10], strict=True):
        assert cx == pytest.approx(x(int(i)), abs=0.6) and cy == pytest.approx(y(v), abs=0.6)
    failures = centres(page, "#box .series.s1 .marker")
    assert [(round(cx), round(cy)) for cx, cy, _ in failures] == [
        (round(x(i)), round(y(v))) for i, v in enumerate([0, 1, 2, 3])
    ]
    # The line breaks at the missing value: one segment of three points.
    d = page.get_attribute("#box .series.s0 .line", "d")
    assert d.count("M") == 1 and d.count("L") == 2

    assert page.eval_on_selector_all("#box .y-tick", "ts => ts.map(t => t.textContent)") == ["0", "5", "10"]
    # Hours in the browser's zone (+05:30): 22:00 UTC is 03:30 on the 15th; the first label has the date.
    assert page.eval_on_selector_all("#box .x-tick", "ts => ts.map(t => t.textContent)") == [
        "15 Nov 03:30",
        "04:30",
        "05:30",
        "06:30",
    ]
    assert page.text_content("#box .y-title") == "requests"
    assert page.text_content("#box .x-title") == "hour (local time)"
    # Not by colour alone: each series has its own dash pattern and marker shape.
    dashes = page.eval_on_selector_all("#box .series .line", "ls => ls.map(l => l.getAttribute('stroke-dasharray'))")
    assert dashes[0] != dashes[1]
    shape0 = page.eval_on_selector("#box .series.s0 .marker", "m => m.getAttribute('d').replace(/[-0-9.]+/g, '')")
    shape1 = page.eval_on_selector("#box .series.s1 .marker", "m => m.getAttribute('d').replace(/[-0-9.]+/g, '')")
    assert shape0 != shape1
    legend = page.eval_on_selector_all("#box .chart-legend li", "ls => ls.map(l => l.textContent.trim())")
    assert legend == ["Requests", "Failures"]
    legend_dashes = page.eval_on_selector_all(
        "#box .chart-legend .line", "ls => ls.map(l => l.getAttribute('stroke-dasharray'))"
    )
    assert legend_dashes == dashes


def test_the_readout_by_keyboard_and_pointer(web: Web, console_server: ConsoleServer) -> None:
    page = chart_page(web, console_server)
    geo = render(page, SPEC)
    assert "arrow keys" in readout(page)
    # One point is in the tab order (a roving tabindex); focusing it reads it out.
    assert page.eval_on_selector_all("#box .hit", "hs => hs.map(h => h.getAttribute('tabindex'))") == [
        "0",
        "-1",
        "-1",
        "-1",
    ]
    page.focus("#box .hit[tabindex='0']")
    assert readout(page) == "15 Nov, 03:30–04:30: Requests 0, Failures 0"
    page.keyboard.press("ArrowRight")
    assert readout(page) == "15 Nov, 04:30–05:30: Requests 5, Failures 1"
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press("End")
    assert readout(page) == "15 Nov, 06:30–07:30: Requests no data, Failures 3"
    page.keyboard.press("Home")
    assert readout(page).startswith("15 Nov, 03:30")
    assert (
        page.eval_on_selector_all("#box .hit", "hs => hs.filter(h => h.getAttribute('tabindex') === '0').length") == 1
    )
    # Each point carries its reading for a screen reader too.
    assert page.get_attribute("#box .hit[data-index='2']", "aria-label") == (
        "15 Nov, 05:30–06:30: Requests 10, Failures 2"
    )
    # The pointer over the third bucket reads it, with a guide line there.
    box = page.eval_on_selector("#box svg", "s => { const r = s.getBoundingClientRect(); return [r.x, r.y]; }")
    plot = geo["plot"]
    px = box[0] + plot["left"] + plot["width"] / 4 * 2.5
    page.mouse.move(px, box[1] + plot["top"] + 10)
    assert readout(page) == "15 Nov, 05:30–06:30: Requests 10, Failures 2"
    assert page.get_attribute("#box .guide", "visibility") == "visible"


def test_bars_and_units(web: Web, console_server: ConsoleServer) -> None:
    page = chart_page(web, console_server)
    spec = {
        **SPEC,
        "kind": "bar",
        "series": [{"name": "Requests", "values": [3, 0, 12000, 7]}, {"name": "Failures", "values": [1, 0, 2, 0]}],
    }
    geo = render(page, spec)
    assert geo["ticks"] == [0, 5000, 10000, 15000]
    assert page.eval_on_selector_all("#box .y-tick", "ts => ts.map(t => t.textContent)") == ["0", "5,000", "10k", "15k"]
    bars = page.eval_on_selector_all(
        "#box .series .bar",
        "bs => bs.map(b => [b.closest('.series').classList[1], +b.dataset.index, b.getAttribute('fill')])",
    )
    # Zero values draw nothing; the second series is hatched (a pattern, not only a colour).
    assert bars == [
        ["s0", 0, None],
        ["s0", 2, None],
        ["s0", 3, None],
        ["s1", 0, "url(#t-hatch)"],
        ["s1", 2, "url(#t-hatch)"],
    ]
    plot = geo["plot"]
    heights = page.eval_on_selector_all("#box .s0 .bar", "bs => bs.map(b => +b.getAttribute('height'))")
    assert heights[1] == pytest.approx(12000 / 15000 * plot["height"], abs=0.01)
    latency = {
        **SPEC,
        "unit": "ms",
        "bucket": "day",
        "step": 86400,
        "x": [T0 - 22 * HOUR, T0 + 2 * HOUR],
        "series": [{"name": "p50", "values": [12.5, None]}, {"name": "p95", "values": [40.25, None]}],
    }
    render(page, latency)
    assert page.text_content("#box .x-title") == "day (UTC)"
    assert page.eval_on_selector_all("#box .x-tick", "ts => ts.map(t => t.textContent)") == ["14 Nov", "15 Nov"]
    page.focus("#box .hit[tabindex='0']")
    assert readout(page) == "14 Nov 2023 (UTC): p50 12.5 ms, p95 40.3 ms"
    page.keyboard.press("ArrowRight")
    assert readout(page) == "15 Nov 2023 (UTC): p50 no data, p95 no data"


def test_an_empty_range(web: Web, console_server: ConsoleServer) -> None:
    page = chart_page(web, console_server)
    geo = render(page, {**SPEC, "x": [], "series": [{"name": "Requests", "values": []}]})
    assert geo["n"] == 0 and geo["ticks"] == [0, 1]
    assert readout(page) == "No data in this range."
