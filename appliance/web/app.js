// The edgegate status page: polls status.json and draws it. Plain
// JavaScript without a framework or a build step, served by the appliance
// itself, so that it works on a gateway without internet. Every text that
// comes from the appliance (controller IDs and errors are a device's
// choice) is set as text, never parsed as markup.
"use strict";
(function () {
  var POLL_MS = 2000;
  var WINDOW_S = 300; // the appliance keeps five minutes of samples
  var MIN_WINDOW_S = 60; // a young appliance's chart spans at least a minute
  var SVGNS = "http://www.w3.org/2000/svg";
  var errors = 0;

  // A script error shows on the page and counts in body[data-errors], so
  // that a person sees it and the browser test finds it in the DOM.
  window.addEventListener("error", function (e) { noteError(e.message || String(e)); });
  window.addEventListener("unhandledrejection", function (e) { noteError("unhandled rejection: " + e.reason); });

  function noteError(msg) {
    errors++;
    document.body.setAttribute("data-errors", String(errors));
    banner("Page error: " + msg, true);
  }

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function banner(text, bad) {
    var b = $("banner");
    if (!text) { b.hidden = true; b.textContent = ""; return; }
    b.hidden = false;
    b.className = bad ? "banner bad" : "banner";
    b.textContent = text;
  }

  function int(n) { return Math.round(n).toLocaleString("en-US"); }

  function rate(x) { return x < 10 ? x.toFixed(1) : int(x); }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v < 1) return v.toFixed(2) + " ms";
    if (v < 10) return v.toFixed(1) + " ms";
    if (v < 1000) return int(v) + " ms";
    return parseFloat((v / 1000).toFixed(v < 10000 ? 2 : 1)) + " s";
  }

  function duration(s) {
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }

  function clock(t) { return new Date(t).toTimeString().slice(0, 8); }

  function setText(id, text, cls) {
    var e = $(id);
    e.textContent = text;
    if (cls !== undefined) e.className = cls;
  }

  // fill replaces a table body's rows; a row is a list of cells, each a
  // text or a node, with an optional class per column (cls) and per row.
  function fill(tbody, rows, cols, empty, rowClass) {
    tbody.textContent = "";
    if (rows.length === 0) {
      var tr = el("tr"), td = el("td", "none", empty);
      td.colSpan = cols.length;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (row, i) {
      var tr = el("tr", rowClass ? rowClass(i) : "");
      row.forEach(function (cell, j) {
        var td = el("td", cols[j]);
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  function last(samples, n) { return samples.slice(Math.max(0, samples.length - n)); }

  // niceMax rounds a chart's top up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  // chart draws lines of samples over the last five minutes (or the
  // minutes since the appliance started, at least one: a young
  // appliance's few seconds are not squeezed against the right edge)
  // into an SVG sized to its box, so that its text is not stretched.
  function chart(box, samples, now, series, unit) {
    var span = samples.length ? now - samples[0].t : 0;
    var win = Math.min(WINDOW_S, Math.max(MIN_WINDOW_S, Math.ceil(span / 60) * 60));
    var W = Math.max(300, Math.round(box.clientWidth || 600)), H = 170;
    var L = 48, R = 8, T = 8, B = 20;
    box.setAttribute("viewBox", "0 0 " + W + " " + H);
    box.textContent = "";
    var top = 0;
    samples.forEach(function (s) {
      series.forEach(function (sr) { var v = s[sr.key]; if (v !== null && v > top) top = v; });
    });
    top = niceMax(top);
    var x = function (t) { return L + (W - L - R) * (1 - (now - t) / win); };
    var y = function (v) { return T + (H - T - B) * (1 - v / top); };
    [0, 0.5, 1].forEach(function (f) {
      var v = top * f, yy = y(v);
      box.appendChild(svg("line", { "class": "grid", x1: L, x2: W - R, y1: yy, y2: yy }));
      box.appendChild(svg("text", { "class": "axis", x: L - 6, y: yy + 4, "text-anchor": "end" },
        (v >= 10 || v === 0 ? int(v) : v.toFixed(1)) + (unit || "")));
    });
    var step = win > 60 ? 60 : 15;
    for (var ago = win; ago >= 0; ago -= step) {
      var label = ago === 0 ? "now" : "−" + (win > 60 ? ago / 60 + " min" : ago + " s");
      box.appendChild(svg("text", { "class": "axis", x: x(now - ago), y: H - 4,
        "text-anchor": ago === 0 ? "end" : (ago === win ? "start" : "middle") }, label));
    }
    var drawn = false;
    series.forEach(function (sr) {
      var d = "", pen = false, first = null, lastX = null;
      samples.forEach(function (s) {
        var v = s[sr.key];
        if (s.t < now - win) return;
        if (v === null || v === undefined) { pen = false; return; }
        var px = x(s.t).toFixed(1), py = y(v).toFixed(1);
        d += (pen ? "L" : "M") + px + " " + py;
        if (first === null) first = px;
        lastX = px;
        pen = true;
      });
      if (d === "") return;
      drawn = true;
      if (sr.area && first !== null) {
        box.appendChild(svg("path", { "class": "area", d: d + "L" + lastX + " " + y(0) + "L" + first + " " + y(0) + "Z" }));
      }
      box.appendChild(svg("path", { "class": "line " + sr.key.replace(/_ms$/, ""), d: d }));
    });
    if (!drawn) {
      box.appendChild(svg("text", { "class": "empty", x: (L + W) / 2, y: H / 2, "text-anchor": "middle" }, "no samples yet"));
    }
    return win;
  }

  function render(d) {
    document.title = "edgegate · " + d.appliance;
    setText("appliance-name", d.appliance);
    setText("ready", d.ready ? "ready" : "not ready", d.ready ? "pill ok" : "pill bad");
    setText("version", "version " + d.version);
    setText("uptime", "up " + duration(d.uptime_s));
    setText("updated", "updated " + clock(d.now));

    var notes = [];
    if (!d.ready) notes.push("Not ready: " + d.not_ready + ".");
    (d.missing || []).forEach(function (m) { notes.push(m + "."); });
    if (d.stuck > 0) notes.push(d.stuck + " controller" + (d.stuck > 1 ? "s look" : " looks") + " stuck (see below).");
    banner(notes.join(" "), !d.ready || d.stuck > 0);

    var now = Math.floor(Date.parse(d.now) / 1000);
    var recent = last(d.samples, 10);
    var sum = 0, worst = null, p50 = null;
    recent.forEach(function (s) {
      sum += s.acked;
      if (s.p99_ms !== null && (worst === null || s.p99_ms > worst)) worst = s.p99_ms;
      if (s.p50_ms !== null) p50 = s.p50_ms;
    });
    var self = d.appliances.filter(function (a) { return a.self; })[0] || {};
    setText("devices", int(d.totals.devices));
    setText("devices-sub", self.workers ? (self.busy + " of " + self.workers + " parser workers busy") : "no parser pool here");
    setText("rate", recent.length ? rate(sum / recent.length) : "–");
    setText("p99", ms(worst));
    setText("p50", "p50 " + ms(p50) + ", last 10 s");
    setText("acked-total", int(d.totals.acked));
    setText("received-total", int(d.totals.received) + " received since start");
    setText("dead-total", int(d.totals.dead_lettered), d.totals.dead_lettered > 0 ? "big bad" : "big");
    setText("refused-total", int(d.totals.refused) + " devices refused");
    var st = d.lease_store;
    setText("store", st.up ? "up" : "down", st.up ? "big ok" : "big bad");
    setText("store-sub", st.kind + (!st.up ? " · " + st.error : st.kind === "in-process" ? "" : " · ping " + ms(st.ping_ms)));

    var win = chart($("chart-rate"), d.samples, now, [
      { key: "received" }, { key: "acked", area: true }, { key: "dead" }]);
    chart($("chart-latency"), d.samples, now, [{ key: "p50_ms" }, { key: "p99_ms" }], "");
    var span = win > 60 ? "last " + win / 60 + " minutes" : "last minute";
    setText("rate-window", "this appliance, " + span);
    setText("latency-window", "milliseconds, " + span);

    var peers = d.peers && d.peers.length ? d.peers.length + " peers configured, " : "not clustered, ";
    setText("cluster-sub", peers + d.routes + " NATS route" + (d.routes === 1 ? "" : "s") + " up");
    fill($("appliances"), d.appliances.map(function (a) {
      var name = el("span", null, a.name);
      if (a.self) { name = el("span"); name.appendChild(document.createTextNode(a.name + " ")); name.appendChild(el("span", "tag self", "this")); }
      var workers = el("span");
      if (a.pools) {
        var bar = el("span", "bar"), fillBar = el("span");
        fillBar.style.width = (a.workers ? Math.round(100 * a.busy / a.workers) : 0) + "%";
        bar.appendChild(fillBar);
        workers.appendChild(bar);
        workers.appendChild(document.createTextNode(a.busy + " busy · " + a.free + " free"));
      } else {
        workers.textContent = "none";
      }
      var note = el("span");
      if (a.paused) note.appendChild(el("span", "tag bad", "dispatch paused"));
      if (!a.sockets) note.appendChild(el("span", "tag", "no device listener"));
      return [name, workers, a.sockets ? int(a.devices) : "–", a.sockets ? int(a.queued) : "–",
        a.sockets ? int(a.in_flight) : "–", int(a.acked), int(a.dead_lettered), note];
    }), ["", "", "num", "num", "num", "num", "num", ""], "No part of the cluster answered.");

    var shown = d.controllers.length;
    setText("controllers-sub", (d.controllers_total > shown ? shown + " of " + d.controllers_total + " shown; " : "") +
      (d.held ? int(d.held) + " more idle with their lease kept; " : "") +
      "stuck: a batch at its parser over " + ms(d.stuck_after_ms) + ", or the parser silent past the lease TTL");
    fill($("controllers"), d.controllers.map(function (c) {
      var state = el("span");
      state.appendChild(document.createTextNode(c.state + " "));
      if (c.stuck) state.appendChild(el("span", "tag bad", "stuck"));
      if (!c.connected) state.appendChild(el("span", "tag warn", "device gone"));
      return [c.id, state, int(c.queued), c.batch ? int(c.batch) : "", c.holder || "", c.fence ? String(c.fence) : "",
        c.locked ? ms(c.lease_age_ms) : "", c.locked ? ms(c.heartbeat_ago_ms) + " ago" : "", c.socket];
    }), ["", "", "num", "num", "", "num", "num", "num", ""], "No controller has messages queued or in flight.",
    function (i) { return d.controllers[i].stuck ? "stuck" : ""; });

    setText("dead-sub", d.dead_seen ? int(d.dead_seen) + " since this appliance started" +
      (d.dead_seen > d.dead_letters.length ? "; the latest " + d.dead_letters.length : "") : "");
    fill($("dead"), d.dead_letters.map(function (x) {
      return [clock(x.at), x.controller, x.seq, x.error];
    }), ["", "", "num", "wrap"], "No dead letter since this appliance started.");
    document.body.setAttribute("data-loaded", String(Number(document.body.getAttribute("data-loaded") || 0) + 1));
  }

  function poll() {
    fetch("status.json", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        try { render(d); } catch (e) { noteError(e && e.stack ? e.stack : String(e)); }
      }, function (err) {
        setText("ready", "no answer", "pill bad");
        banner("No answer from the appliance (" + err.message + "); retrying.", true);
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  poll();
})();
