// AgentRouter's own small SVG charts for usage series: bars or lines over time,
// with axis labels, a legend, a hover and keyboard read-out, and series told apart
// by more than colour (dash patterns and marker shapes for lines, solid and
// hatched fills for bars). No dependencies; no inline style (CSP): the look is in
// app.css, keyed by the classes s0..s3.
//
//   AgentRouterChart.render(container, spec) -> chart
//   spec = {id, title, kind: "line" | "bar", unit, bucket: "minute" | "hour" | "day",
//           step: seconds, x: [unix seconds, ...],
//           series: [{name, values: [number | null, ...]}, ...]}
//   chart = {svg, readout, plot: {left, top, width, height}, ticks: [...], n,
//            select(i), x(i), y(v)}
//
// Elements with a data-chart attribute (the spec as JSON) are drawn on load and
// redrawn when their width changes.
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var DASHES = ["", "7 4", "2 3", "9 3 2 3"];
  var MARKERS = ["circle", "square", "triangle", "diamond"];
  var MARGIN = { top: 14, right: 14, bottom: 46, left: 60 };
  var HEIGHT = 240;
  var MIN_LABEL_GAP = 70; // pixels between two x-axis labels
  var MARKER_MIN_BAND = 9; // draw every point's marker when points are this far apart

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) {
      node.setAttribute(k, String(attrs[k]));
    });
    if (parent) {
      parent.appendChild(node);
    }
    return node;
  }

  // A round step (1, 2, 2.5 or 5 times a power of ten; no 2.5 for counts) that
  // divides max into about count parts.
  function niceStep(max, count, integer) {
    if (!(max > 0)) {
      return 1;
    }
    var raw = max / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var quarter = !integer || mag >= 10;
    var step = norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 && quarter ? 2.5 : norm <= 5 ? 5 : 10;
    return step * mag;
  }

  // The y-axis ticks for values up to max: 0, step, ..., top >= max (4 or so).
  function ticks(max, integer) {
    var step = niceStep(max, 4, integer);
    if (integer) {
      step = Math.max(1, Math.ceil(step));
    }
    var top = Math.max(step, Math.ceil(max / step - 1e-9) * step);
    var out = [];
    for (var v = 0; v <= top + step / 2; v += step) {
      out.push(Math.round(v * 1e6) / 1e6);
    }
    return out;
  }

  var numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  var compactFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

  function formatValue(v, unit) {
    if (v === null || v === undefined) {
      return "no data";
    }
    return numberFormat.format(v) + (unit === "ms" ? " ms" : "");
  }

  function axisValue(v) {
    return Math.abs(v) >= 10000 ? compactFormat.format(v) : numberFormat.format(v);
  }

  // Day buckets are UTC days (the API aligns them so): shown as UTC dates. Hours
  // and minutes are shown in the browser's time zone.
  function axisTime(t, bucket, withDate) {
    var d = new Date(t * 1000);
    if (bucket === "day") {
      return d.toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
    }
    var time = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    if (!withDate) {
      return time;
    }
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + time;
  }

  function spanText(t, bucket, step) {
    var start = new Date(t * 1000);
    if (bucket === "day") {
      return start.toLocaleDateString(undefined, {
        year: "numeric", month: "short", day: "numeric", timeZone: "UTC",
      }) + " (UTC)";
    }
    var end = new Date((t + step) * 1000);
    var opts = { hour: "2-digit", minute: "2-digit" };
    return start.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + ", " +
      start.toLocaleTimeString(undefined, opts) + "–" + end.toLocaleTimeString(undefined, opts);
  }

  function markerPath(shape, x, y, r) {
    if (shape === "square") {
      return "M" + (x - r) + " " + (y - r) + "h" + 2 * r + "v" + 2 * r + "h" + -2 * r + "Z";
    }
    if (shape === "triangle") {
      return "M" + x + " " + (y - r * 1.2) + "L" + (x + r * 1.1) + " " + (y + r * 0.9) + "L" + (x - r * 1.1) + " " + (y + r * 0.9) + "Z";
    }
    if (shape === "diamond") {
      return "M" + x + " " + (y - r * 1.3) + "L" + (x + r * 1.3) + " " + y + "L" + x + " " + (y + r * 1.3) + "L" + (x - r * 1.3) + " " + y + "Z";
    }
    return "M" + (x - r) + " " + y + "a" + r + " " + r + " 0 1 0 " + 2 * r + " 0a" + r + " " + r + " 0 1 0 " + -2 * r + " 0Z";
  }

  function legend(spec, patternId) {
    var list = document.createElement("ul");
    list.className = "chart-legend";
    spec.series.forEach(function (s, k) {
      var item = document.createElement("li");
      var swatch = el("svg", { width: 30, height: 14, viewBox: "0 0 30 14", "aria-hidden": "true", class: "swatch s" + k });
      if (spec.kind === "bar") {
        var box = el("rect", { x: 3, y: 1, width: 24, height: 12, class: "bar" + (k % 2 ? " hatched" : "") }, swatch);
        if (k % 2) {
          box.setAttribute("fill", "url(#" + patternId + ")");
        }
      } else {
        el("line", { x1: 1, y1: 7, x2: 29, y2: 7, class: "line", "stroke-dasharray": DASHES[k % 4] || "none" }, swatch);
        el("path", { d: markerPath(MARKERS[k % 4], 15, 7, 3.5), class: "marker" }, swatch);
      }
      item.appendChild(swatch);
      item.appendChild(document.createTextNode(" " + s.name));
      list.appendChild(item);
    });
    return list;
  }

  function render(container, spec) {
    container.querySelectorAll(".chart-body").forEach(function (old) { old.remove(); });
    var body = document.createElement("div");
    body.className = "chart-body";
    var n = spec.x.length;
    var width = Math.max(280, Math.floor(container.clientWidth || 640));
    var plot = {
      left: MARGIN.left,
      top: MARGIN.top,
      width: width - MARGIN.left - MARGIN.right,
      height: HEIGHT - MARGIN.top - MARGIN.bottom,
    };
    var max = 0;
    spec.series.forEach(function (s) {
      s.values.forEach(function (v) {
        if (v !== null && v > max) {
          max = v;
        }
      });
    });
    var yTicks = ticks(max, spec.unit !== "ms");
    var yTop = yTicks[yTicks.length - 1];
    var band = n ? plot.width / n : plot.width;
    function x(i) { return plot.left + band * (i + 0.5); }
    function y(v) { return plot.top + plot.height - (v / yTop) * plot.height; }
    var patternId = (spec.id || "chart") + "-hatch";

    var svg = el("svg", {
      width: width,
      height: HEIGHT,
      viewBox: "0 0 " + width + " " + HEIGHT,
      class: "chart-svg " + spec.kind,
      role: "group",
      "aria-label": spec.title + ": " + n + " points; use the arrow keys to read them",
      "data-plot": [plot.left, plot.top, plot.width, plot.height].join(" "),
    });
    var defs = el("defs", {}, svg);
    var pattern = el("pattern", { id: patternId, width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" }, defs);
    el("rect", { width: 6, height: 6, class: "hatch-bg" }, pattern);
    el("line", { x1: 0, y1: 0, x2: 0, y2: 6, class: "hatch-line" }, pattern);

    // Axes and grid.
    var axes = el("g", { class: "axes", "aria-hidden": "true" }, svg);
    yTicks.forEach(function (v) {
      var yy = y(v);
      el("line", { x1: plot.left, x2: plot.left + plot.width, y1: yy, y2: yy, class: v === 0 ? "axis" : "grid" }, axes);
      var label = el("text", { x: plot.left - 8, y: yy + 4, class: "tick y-tick", "text-anchor": "end" }, axes);
      label.textContent = axisValue(v);
    });
    var every = Math.max(1, Math.ceil(MIN_LABEL_GAP / band));
    var lastDay = null;
    for (var i = 0; i < n; i += every) {
      var day = new Date(spec.x[i] * 1000).toDateString();
      var t = el("text", { x: x(i), y: plot.top + plot.height + 18, class: "tick x-tick", "text-anchor": "middle" }, axes);
      t.textContent = axisTime(spec.x[i], spec.bucket, spec.bucket !== "day" && day !== lastDay && n > 1);
      lastDay = day;
    }
    var yTitle = el("text", {
      x: 0, y: 0, class: "axis-title y-title", "text-anchor": "middle",
      transform: "translate(14 " + (plot.top + plot.height / 2) + ") rotate(-90)",
    }, axes);
    yTitle.textContent = spec.unit;
    var xTitle = el("text", { x: plot.left + plot.width / 2, y: HEIGHT - 6, class: "axis-title x-title", "text-anchor": "middle" }, axes);
    xTitle.textContent = spec.bucket === "day" ? "day (UTC)" : spec.bucket + " (local time)";

    // The data.
    var data = el("g", { class: "data", "aria-hidden": "true" }, svg);
    var m = spec.series.length;
    if (spec.kind === "bar") {
      var inner = band * 0.8;
      var bw = inner / Math.max(1, m);
      spec.series.forEach(function (s, k) {
        var g = el("g", { class: "series s" + k }, data);
        s.values.forEach(function (v, j) {
          if (v === null || v <= 0) {
            return;
          }
          var rect = el("rect", {
            x: plot.left + band * j + band * 0.1 + k * bw,
            y: y(v),
            width: Math.max(1, bw - (bw > 3 ? 1 : 0)),
            height: plot.top + plot.height - y(v),
            class: "bar" + (k % 2 ? " hatched" : ""),
            "data-index": j,
          }, g);
          if (k % 2) {
            rect.setAttribute("fill", "url(#" + patternId + ")");
          }
        });
      });
    } else {
      spec.series.forEach(function (s, k) {
        var g = el("g", { class: "series s" + k }, data);
        var d = "";
        var pen = false;
        s.values.forEach(function (v, j) {
          if (v === null) {
            pen = false;
            return;
          }
          d += (pen ? "L" : "M") + x(j) + " " + y(v);
          pen = true;
        });
        el("path", { d: d || "M0 0", class: "line", "stroke-dasharray": DASHES[k % 4] || "none" }, g);
        if (band >= MARKER_MIN_BAND) {
          s.values.forEach(function (v, j) {
            if (v !== null) {
              el("path", { d: markerPath(MARKERS[k % 4], x(j), y(v), 3.2), class: "marker", "data-index": j }, g);
            }
          });
        }
      });
    }

    // The selection: a guide line and each series' marker at the chosen point.
    var focusLayer = el("g", { class: "focus", "aria-hidden": "true" }, svg);
    var guide = el("line", { x1: 0, x2: 0, y1: plot.top, y2: plot.top + plot.height, class: "guide", visibility: "hidden" }, focusLayer);
    var spots = spec.series.map(function (s, k) {
      return el("path", { d: "", class: "spot s" + k, visibility: "hidden" }, focusLayer);
    });

    var readout = document.createElement("p");
    readout.className = "chart-readout";
    readout.setAttribute("aria-live", "polite");
    var idle = n ? "Point at the chart, or focus it and use the arrow keys, to read a value." : "No data in this range.";
    readout.textContent = idle;

    function text(j) {
      return spanText(spec.x[j], spec.bucket, spec.step) + ": " + spec.series.map(function (s) {
        return s.name + " " + formatValue(s.values[j], spec.unit);
      }).join(", ");
    }

    // One focusable target per point (a roving tabindex: one of them is in the tab order).
    var hits = el("g", { class: "hits" }, svg);
    var targets = [];
    var current = -1;
    for (var j = 0; j < n; j++) {
      targets.push(el("rect", {
        x: plot.left + band * j,
        y: plot.top,
        width: Math.max(band, 0.5),
        height: plot.height,
        class: "hit",
        tabindex: j === 0 ? 0 : -1,
        role: "img",
        "aria-label": text(j),
        "data-index": j,
      }, hits));
    }

    function select(j) {
      if (j < 0 || j >= n) {
        guide.setAttribute("visibility", "hidden");
        spots.forEach(function (spot) { spot.setAttribute("visibility", "hidden"); });
        readout.textContent = idle;
        return;
      }
      if (current >= 0 && targets[current]) {
        targets[current].setAttribute("tabindex", -1);
      }
      current = j;
      targets[j].setAttribute("tabindex", 0);
      guide.setAttribute("x1", x(j));
      guide.setAttribute("x2", x(j));
      guide.setAttribute("visibility", "visible");
      spec.series.forEach(function (s, k) {
        var v = s.values[j];
        if (v === null) {
          spots[k].setAttribute("visibility", "hidden");
          return;
        }
        var offset = spec.kind === "bar" ? (-0.4 + (k + 0.5) * 0.8 / m) * band : 0;
        spots[k].setAttribute("d", markerPath(MARKERS[k % 4], x(j) + offset, y(v), 4.5));
        spots[k].setAttribute("visibility", "visible");
      });
      readout.textContent = text(j);
    }

    targets.forEach(function (target, j) {
      target.addEventListener("focus", function () { select(j); });
    });
    svg.addEventListener("keydown", function (event) {
      var step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, PageDown: 10, PageUp: -10 }[event.key];
      var to = null;
      if (step !== undefined) {
        to = Math.min(n - 1, Math.max(0, (current < 0 ? 0 : current) + step));
      } else if (event.key === "Home") {
        to = 0;
      } else if (event.key === "End") {
        to = n - 1;
      }
      if (to !== null && n) {
        event.preventDefault();
        targets[to].focus();
      }
    });
    svg.addEventListener("pointermove", function (event) {
      var box = svg.getBoundingClientRect();
      var px = (event.clientX - box.left) * (width / box.width);
      var j = Math.floor((px - plot.left) / band);
      if (j >= 0 && j < n) {
        select(j);
      }
    });
    svg.addEventListener("pointerleave", function () {
      if (document.activeElement && targets.indexOf(document.activeElement) >= 0) {
        select(targets.indexOf(document.activeElement));
      } else {
        select(-1);
      }
    });

    body.appendChild(svg);
    body.appendChild(legend(spec, patternId));
    body.appendChild(readout);
    var before = container.querySelector("details");
    container.insertBefore(body, before || null);
    return {
      svg: svg,
      readout: readout,
      plot: plot,
      ticks: yTicks,
      n: n,
      select: select,
      x: x,
      y: y,
    };
  }

  function start() {
    document.querySelectorAll("[data-chart]").forEach(function (container) {
      var spec;
      try {
        spec = JSON.parse(container.getAttribute("data-chart"));
      } catch (e) {
        return;
      }
      var drawnWidth = 0;
      function draw() {
        var w = Math.floor(container.clientWidth);
        if (w !== drawnWidth) {
          drawnWidth = w;
          container.chart = render(container, spec);
        }
      }
      draw();
      if (typeof ResizeObserver === "function") {
        var pending = false;
        new ResizeObserver(function () {
          if (!pending) {
            pending = true;
            requestAnimationFrame(function () { pending = false; draw(); });
          }
        }).observe(container);
      }
    });
  }

  window.AgentRouterChart = { render: render, ticks: ticks, formatValue: formatValue };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
