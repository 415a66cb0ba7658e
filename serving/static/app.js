// racewire live timing page: plain JavaScript, no build step, nothing loaded from outside this server.
//
// Data: REST for the race list, the session (drivers, track outline) and the recent events; then one
// EventSource on /api/races/{id}/stream. The browser reconnects by itself and sends Last-Event-ID, so
// the server resumes exactly after the last message this page received.
"use strict";

(() => {
  const $ = (sel) => document.querySelector(sel);
  const params = new URLSearchParams(location.search);

  const state = {
    raceId: null,
    source: null,
    lastId: null,          // id of the last SSE message / newest event shown
    session: null,
    drivers: new Map(),    // number -> driver
    board: null,
    follow: (params.get("follow") || "").toUpperCase() || null,
    rowsEl: new Map(),     // number -> <tr>
    prevPos: new Map(),    // number -> position
    cars: new Map(),       // number -> {anchor, rate, at, x, y, el}
    outline: null,         // {pts, cum, len}
    history: new Map(),    // number -> {laps: Map(lap -> ms), gaps: Map(lap -> ms)}
    chartMode: "laps",
    chartSel: new Set(),
    chartUserSet: false,
    retryTimer: null,
    feedCount: 0,
    strategy: null,        // latest /strategy answer
    strategyLap: -1,       // laps completed by the leader when it was fetched
    clock: null,           // {left: ms left when received, at: performance.now() then, running}
  };

  const KIND_LABEL = { QUALIFYING: "QUALIFYING", SPRINT_QUALIFYING: "SPRINT QUALIFYING", PRACTICE: "PRACTICE",
    SPRINT: "SPRINT", RACE: "" };
  const timed = (b) => ["QUALIFYING", "SPRINT_QUALIFYING", "PRACTICE"].includes(b && b.session_type);
  const partName = (b, part) => `${b.session_type === "SPRINT_QUALIFYING" ? "SQ" : "Q"}${part}`;

  // --------------------------------------------------------------------------------- formatting
  const fmtLap = (ms) => {
    if (ms == null) return "";
    const m = Math.floor(ms / 60000), s = (ms % 60000) / 1000;
    return (m ? `${m}:${s.toFixed(3).padStart(6, "0")}` : s.toFixed(3));
  };
  const fmtGap = (ms, laps, leader) => {
    if (leader) return "LEADER";
    if (laps > 0) return `+${laps} LAP${laps > 1 ? "S" : ""}`;
    if (ms == null) return "";
    return `${ms < 0 ? "-" : "+"}${(Math.abs(ms) / 1000).toFixed(3)}`;
  };
  const colour = (hex) => `#${(hex || "888888").replace(/^#/, "")}`;
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const el = (tag, cls, html) => { const e = document.createElement(tag); if (cls) e.className = cls; if (html != null) e.innerHTML = html; return e; };
  const svg = (tag, attrs) => { const e = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };

  // --------------------------------------------------------------------------------- connection
  function setConn(kind, label) {
    const c = $("#conn");
    c.className = `conn conn-${kind}`;
    c.querySelector(".label").textContent = label;
  }

  // --------------------------------------------------------------------------------- races
  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" } });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  async function loadRaceList() {
    let races = [];
    try { races = (await getJSON("/api/races")).races; } catch (e) { setConn("offline", "server unreachable"); return races; }
    const pick = $("#race-picker");
    const current = state.raceId || params.get("race");
    pick.innerHTML = "";
    if (!races.length) pick.append(new Option("no races yet", ""));
    const order = { live: 0, chequered: 1, finished: 2 };
    races.sort((a, b) => (order[a.status] ?? 3) - (order[b.status] ?? 3) || String(a.race_id).localeCompare(b.race_id));
    for (const r of races) {
      const label = `${r.name || r.race_id} · ${r.status || "?"}${r.lap != null ? ` · L${r.lap}/${r.total_laps}` : ""}`;
      const o = new Option(label, r.race_id);
      if (r.race_id === current) o.selected = true;
      pick.append(o);
    }
    return races;
  }

  async function openRace(raceId) {
    if (!raceId) return;
    if (state.source) { state.source.close(); state.source = null; }
    clearTimeout(state.retryTimer);
    Object.assign(state, { raceId, lastId: null, session: null, board: null, outline: null });
    state.drivers.clear(); state.rowsEl.clear(); state.prevPos.clear(); state.cars.clear(); state.history.clear();
    state.chartSel.clear(); state.chartUserSet = false; state.feedCount = 0;
    $("#tower tbody").innerHTML = ""; $("#feed").innerHTML = ""; $("#rc").innerHTML = ""; $("#map").innerHTML = "";
    $("#hero").hidden = true; $("#fastest").hidden = true;
    $("#strategy tbody").innerHTML = ""; $("#strategy-focus").hidden = true; $("#strategy-model").textContent = "";
    state.strategy = null; state.strategyLap = -1;
    params.set("race", raceId);
    history.replaceState(null, "", `?${params}`);
    setConn("connecting", "connecting");

    try {
      const s = await getJSON(`/api/races/${encodeURIComponent(raceId)}/drivers`);
      state.session = s;
      for (const d of s.drivers || []) state.drivers.set(d.number, d);
      $("#race-name").textContent = [s.name, s.circuit].filter(Boolean).join(" · ");
      drawTrack(s.track_outline || []);
      if (s.history) loadLapHistory(raceId);  // not awaited: the stream need not wait for the chart's past laps
    } catch (e) { /* the stream still works without the session */ }
    try {
      // enough of the past for the race-control panel too (the events feed keeps its last 150)
      const ev = await getJSON(`/api/races/${encodeURIComponent(raceId)}/events?limit=500`);
      for (const e of ev.events) addFeed(e.kind, e.data, e.id, false);
      if (ev.next) state.lastId = ev.next;
    } catch (e) { /* empty feed */ }
    connect();
  }

  function connect() {
    const raceId = state.raceId;
    // delta=1: live leaderboards come as small deltas against the version this page holds
    const url = `/api/races/${encodeURIComponent(raceId)}/stream?delta=1${state.lastId ? `&after=${encodeURIComponent(state.lastId)}` : ""}`;
    const es = new EventSource(url);
    state.source = es;
    es.onopen = () => setConn("live", "live");
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) {
        // the server refused (e.g. race gone) or the browser gave up: try again shortly, resuming
        setConn("offline", "offline · retrying");
        clearTimeout(state.retryTimer);
        state.retryTimer = setTimeout(() => { if (state.source === es && state.raceId === raceId) connect(); }, 5000);
      } else {
        setConn("reconnecting", "reconnecting…");
      }
    };
    es.addEventListener("leaderboard", (m) => { state.lastId = m.lastEventId; onBoard(JSON.parse(m.data)); });
    es.addEventListener("leaderboard-delta", (m) => {
      const board = applyDelta(state.board, JSON.parse(m.data));
      if (board) { state.lastId = m.lastEventId; onBoard(board); return; }
      // not based on what this page holds (should not happen): reconnect for a full snapshot
      es.close();
      if (state.lastId) state.lastId = state.lastId.split(".v")[0];
      connect();
    });
    es.addEventListener("event", (m) => { state.lastId = m.lastEventId; addFeed("event", JSON.parse(m.data), m.lastEventId, true); });
    es.addEventListener("commentary", (m) => { state.lastId = m.lastEventId; addFeed("commentary", JSON.parse(m.data), m.lastEventId, true); });
    es.addEventListener("gap", (m) => { addFeed("gap", JSON.parse(m.data), m.lastEventId, true); });
  }

  // --------------------------------------------------------------------------------- leaderboard
  const DELTA_KEYS = new Set(["rows", "order", "positions", "positions_removed", "base"]);

  function applyDelta(b, d) {
    if (!b || b.version !== d.base) return null;
    const nb = { ...b };
    for (const k in d) if (!DELTA_KEYS.has(k)) nb[k] = d[k];
    const rows = new Map((b.rows || []).map((r) => [r.driver_number, r]));
    for (const num in d.rows || {}) { const n = Number(num); rows.set(n, { ...(rows.get(n) || {}), ...d.rows[num] }); }
    const order = d.order || (b.rows || []).map((r) => r.driver_number);
    nb.rows = order.map((n) => rows.get(n)).filter(Boolean);
    nb.positions = { ...(b.positions || {}), ...(d.positions || {}) };
    for (const k of d.positions_removed || []) delete nb.positions[k];
    return nb;
  }

  function onBoard(b) {
    const prev = state.board;
    state.board = b;
    const kind = $("#session-kind");
    kind.hidden = !KIND_LABEL[b.session_type];
    kind.textContent = KIND_LABEL[b.session_type] || "";
    const counter = $("#lap-counter");
    if (timed(b)) counter.textContent = b.part ? partName(b, b.part) : "SESSION";
    else counter.textContent = `LAP ${Math.min(b.lap || 0, b.total_laps || 0) || b.lap || 0}/${b.total_laps || "–"}`;
    setClock(b);
    const flag = $("#flag");
    const flagKind = b.finished ? "CHEQUERED" : (b.track_status || "none");
    flag.className = `flag flag-${flagKind}`;
    flag.textContent = { GREEN: "GREEN", YELLOW: "YELLOW", SC: "SAFETY CAR", VSC: "VSC", VSC_ENDING: "VSC ENDING",
      RED: "RED FLAG", CHEQUERED: "CHEQUERED" }[flagKind] || flagKind;
    renderTower(b);
    renderWeather(b.weather);
    $(".strategy-panel").hidden = timed(b);  // no strategy calls where nobody races for position
    renderHero(b.hero);
    renderFastest(b.fastest_lap);
    recordHistory(b, prev);
    updateCars(b);
    renderChart();
    loadStrategy();
  }

  // the session clock: time left as the board gave it, run down here while the clock runs
  function setClock(b) {
    if (b.clock_remaining_ms == null) { state.clock = null; $("#clock").hidden = true; return; }
    const since = b.clock_running && b.clock_ts_ms != null ? Math.max(0, (b.ts_ms || 0) - b.clock_ts_ms) : 0;
    state.clock = { left: Math.max(0, b.clock_remaining_ms - since), at: performance.now(), running: !!b.clock_running };
    tickClock();
  }

  function tickClock() {
    const c = state.clock, box = $("#clock");
    if (!c) return;
    const left = Math.max(0, c.left - (c.running ? performance.now() - c.at : 0));
    const s = Math.ceil(left / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    box.textContent = `${h ? `${h}:${String(m).padStart(2, "0")}` : m}:${String(sec).padStart(2, "0")}`;
    box.classList.toggle("stopped", !c.running);
    box.hidden = false;
  }
  setInterval(tickClock, 250);

  function renderTower(b) {
    const tbody = $("#tower tbody");
    const isTimed = timed(b);
    const cut = isTimed ? (b.cut || 0) : 0;
    const fl = b.fastest_lap;
    const rows = b.rows || [];
    rows.forEach((r, i) => {
      let tr = state.rowsEl.get(r.driver_number);
      if (!tr) {
        tr = el("tr");
        tr.dataset.driver = r.driver_number;
        tr.innerHTML = `<td class="c-pos"></td><td class="c-drv"><span class="teambar"></span><span class="code"></span><span class="delta"></span></td>
          <td class="c-gap"></td><td class="c-int"></td><td class="c-last"></td><td class="c-best"></td>
          <td class="c-tyre"></td><td class="c-pit"></td><td class="c-status"></td>`;
        tr.addEventListener("click", () => setFollow(tr.dataset.code === state.follow ? null : tr.dataset.code));
        state.rowsEl.set(r.driver_number, tr);
      }
      tr.dataset.code = r.code;
      tr.dataset.position = r.position;
      const c = tr.children;
      c[0].textContent = r.position;
      c[1].querySelector(".teambar").style.background = colour(r.team_colour);
      c[1].querySelector(".code").textContent = r.code;
      c[1].title = (state.drivers.get(r.driver_number) || {}).name || r.team;
      const g = r.positions_gained_last_lap;
      const d = c[1].querySelector(".delta");
      d.className = `delta ${g > 0 ? "up" : g < 0 ? "down" : ""}`;
      d.textContent = g > 0 ? `▲${g}` : g < 0 ? `▼${-g}` : "";
      // a car knocked out earlier keeps its time; its gaps were to another part's cars
      c[2].textContent = r.knocked_out ? "" : fmtGap(r.gap_ms, r.gap_laps, i === 0);
      c[3].textContent = i === 0 || r.knocked_out ? "" : fmtGap(r.interval_ms, r.interval_laps, false);
      c[4].textContent = fmtLap(r.last_lap_ms);
      c[4].className = "c-last" + (r.last_lap_ms != null && r.last_lap_ms === r.best_lap_ms ? (fl && fl.driver_number === r.driver_number && fl.lap_time_ms === r.last_lap_ms ? " fastest" : " pb") : "");
      c[5].textContent = fmtLap(r.best_lap_ms);
      c[5].className = "c-best" + (fl && fl.driver_number === r.driver_number ? " fastest" : "");
      c[6].innerHTML = r.compound ? `<span class="tyre tyre-${esc(r.compound)}" title="${esc(r.compound)}">${esc(r.compound[0])}</span>${r.tyre_age ?? ""}` : "";
      c[7].textContent = r.pit_count || 0;
      if (r.knocked_out) c[8].innerHTML = `<span class="status status-OUT">OUT ${esc(partName(b, r.knocked_out))}</span>`;
      else c[8].innerHTML = `<span class="status status-${esc(r.status)}">${r.status === "RUNNING" ? "" : esc(r.status)}</span>`;
      tr.classList.toggle("knocked-out", !!r.knocked_out);
      tr.classList.toggle("ko-zone", cut > 0 && !r.knocked_out && r.position > cut);
      tr.classList.toggle("cut-line", cut > 0 && r.position === cut);
      const before = state.prevPos.get(r.driver_number);
      tr.classList.toggle("moved-up", before != null && r.position < before);
      tr.classList.toggle("moved-down", before != null && r.position > before);
      tr.classList.toggle("retired", r.status === "RETIRED");
      tr.classList.toggle("followed", r.code === state.follow);
      state.prevPos.set(r.driver_number, r.position);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    while (tbody.children.length > rows.length) tbody.lastChild.remove();
    setTimeout(() => { for (const tr of tbody.children) tr.classList.remove("moved-up", "moved-down"); }, 1200);
  }

  function renderWeather(w) {
    const box = $("#weather");
    if (!w) { box.hidden = true; return; }
    const num = (v, unit, digits = 1) => (v == null ? "–" : `${Number(v).toFixed(digits)}${unit}`);
    const arrow = w.wind_direction_deg == null ? "" : ` ${["N", "NE", "E", "SE", "S", "SW", "W", "NW"][Math.round(w.wind_direction_deg / 45) % 8]}`;
    const set = (k, text) => { box.querySelector(`[data-k="${k}"]`).textContent = text; };
    set("air", num(w.air_temp_c, "°C"));
    set("track", num(w.track_temp_c, "°C"));
    set("humidity", num(w.humidity_pct, "%", 0));
    set("wind", `${num(w.wind_speed_ms, " m/s")}${arrow}`);
    set("rain", w.rainfall ? "RAIN" : "dry");
    box.querySelector('[data-k="rain"]').classList.toggle("wet", !!w.rainfall);
    box.hidden = false;
  }

  function renderHero(h) {
    const box = $("#hero");
    if (!h) { box.hidden = true; return; }
    const gained = h.positions_gained > 0 ? `gained ${h.positions_gained} place${h.positions_gained > 1 ? "s" : ""} on the last lap`
      : h.positions_gained < 0 ? `lost ${-h.positions_gained} on the last lap` : "held position on the last lap";
    box.innerHTML = `<span class="title">Last-lap hero</span><span class="who">${esc(h.code)}</span>
      <span class="time">${fmtLap(h.lap_time_ms)}</span><span>lap ${h.lap} · ${gained}</span>
      ${h.final ? "" : '<span class="prov">provisional</span>'}`;
    box.dataset.code = h.code;
    box.hidden = false;
  }

  function renderFastest(f) {
    const chip = $("#fastest");
    if (!f) { chip.hidden = true; return; }
    chip.textContent = `Fastest lap ${f.code} ${fmtLap(f.lap_time_ms)} (L${f.lap})`;
    chip.hidden = false;
  }

  function setFollow(code) {
    state.follow = code;
    if (code) params.set("follow", code); else params.delete("follow");
    history.replaceState(null, "", `?${params}`);
    for (const tr of state.rowsEl.values()) tr.classList.toggle("followed", tr.dataset.code === code);
    for (const car of state.cars.values()) {
      car.el.classList.toggle("followed", car.code === code);
      car.el.classList.toggle("labelled", car.code === code || (state.board && state.board.rows[0] && state.board.rows[0].code === car.code));
    }
    $("#follow-label").textContent = code ? `following ${code}` : "";
    if (code) {
      const n = [...state.rowsEl.values()].find((tr) => tr.dataset.code === code);
      if (n) state.chartSel.add(Number(n.dataset.driver));
      const row = [...state.rowsEl.values()].find((tr) => tr.dataset.code === code);
      if (row && window.innerWidth < 1000) row.scrollIntoView({ block: "nearest" });
    }
    renderChips(); renderChart(); renderStrategy();
  }

  // --------------------------------------------------------------------------------- track map
  function drawTrack(outline) {
    const map = $("#map");
    map.innerHTML = "";
    if (!outline.length) { state.outline = null; return; }
    const pts = outline.map((p) => [p.x, -p.y]);   // SVG y grows downwards
    const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
    const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
    const pad = Math.max(maxX - minX, maxY - minY) * 0.06 + 20;
    map.setAttribute("viewBox", `${minX - pad} ${minY - pad} ${maxX - minX + 2 * pad} ${maxY - minY + 2 * pad}`);
    map.setAttribute("preserveAspectRatio", "xMidYMid meet");
    const d = "M" + pts.map((p) => `${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("L") + "Z";
    const scale = Math.max(maxX - minX, maxY - minY) / 400;
    map.append(svg("path", { d, class: "track", "stroke-width": (14 * scale).toFixed(1) }));
    map.append(svg("path", { d, class: "track-inner", "stroke-width": (2 * scale).toFixed(1) }));
    const [a, b] = [pts[0], pts[1]];
    const nx = -(b[1] - a[1]), ny = b[0] - a[0], nl = Math.hypot(nx, ny) || 1, half = 12 * scale;
    map.append(svg("line", { x1: a[0] + nx / nl * half, y1: a[1] + ny / nl * half, x2: a[0] - nx / nl * half,
      y2: a[1] - ny / nl * half, class: "startline", "stroke-width": (4 * scale).toFixed(1) }));
    const cum = [0];
    for (let i = 0; i < pts.length; i++) {
      const p = pts[i], q = pts[(i + 1) % pts.length];
      cum.push(cum[i] + Math.hypot(q[0] - p[0], q[1] - p[1]));
    }
    state.outline = { pts, cum, len: cum[cum.length - 1], scale };
    map.append(svg("g", { id: "cars" }));
  }

  // a point on the outline at a fraction of the lap (progress is lap distance, measured from the line)
  function onTrack(frac) {
    const o = state.outline;
    let dist = (((frac % 1) + 1) % 1) * o.len, lo = 0, hi = o.pts.length - 1;
    while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (o.cum[mid] <= dist) lo = mid; else hi = mid - 1; }
    const p = o.pts[lo], q = o.pts[(lo + 1) % o.pts.length], seg = o.cum[lo + 1] - o.cum[lo] || 1, t = (dist - o.cum[lo]) / seg;
    return [p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t];
  }

  function updateCars(b) {
    const o = state.outline;
    const group = $("#cars");
    if (!o || !group) return;
    const now = performance.now();
    const positions = b.positions || {};
    for (const r of b.rows || []) {
      let car = state.cars.get(r.driver_number);
      if (!car) {
        const g = svg("g", { class: "car", "data-driver": r.driver_number });
        const radius = 9 * o.scale;
        g.append(svg("circle", { r: radius.toFixed(1), fill: colour(r.team_colour) }));
        const t = svg("text", { x: (radius * 1.3).toFixed(1), y: (-radius * 0.6).toFixed(1), "font-size": (18 * o.scale).toFixed(1) });
        t.textContent = r.code;
        g.append(t);
        const tip = svg("title", {});
        tip.textContent = r.code;
        g.append(tip);
        group.append(g);
        car = { el: g, code: r.code, anchor: null, at: now, rate: 0, x: null, y: null };
        state.cars.set(r.driver_number, car);
      }
      car.code = r.code;
      car.el.classList.toggle("followed", r.code === state.follow);
      car.el.classList.toggle("dim", r.status === "RETIRED");
      car.el.classList.toggle("labelled", r.position === 1 || r.code === state.follow);
      const xy = positions[String(r.driver_number)];
      const moving = r.status === "RUNNING";
      if (car.anchor != null && moving && r.progress > car.anchor) {
        const dt = now - car.at;
        if (dt > 50) car.rate = car.rate ? 0.7 * car.rate + 0.3 * (r.progress - car.anchor) / dt : (r.progress - car.anchor) / dt;
      }
      if (!moving) car.rate = 0;
      car.anchor = r.progress; car.at = now; car.status = r.status;
      if (xy) { car.x = xy[0]; car.y = -xy[1]; car.exact = true; } else { car.exact = false; }
      if (r.status === "PIT" && xy) car.rate = 0;  // in the pit lane: off the outline, show the reported spot
    }
    // followed car drawn last (on top)
    const f = [...state.cars.values()].find((c) => c.code === state.follow);
    if (f) group.append(f.el);
    if (!state.animating) { state.animating = true; requestAnimationFrame(animate); }
  }

  function animate() {
    const now = performance.now();
    for (const car of state.cars.values()) {
      let x = car.x, y = car.y;
      if (car.rate > 0 && state.outline) {
        // dead reckoning between snapshots along the outline, at the car's recent pace (at most 3 s ahead)
        const ahead = Math.min(now - car.at, 3000) * car.rate;
        [x, y] = onTrack(car.anchor + ahead);
      } else if (!car.exact && state.outline && car.anchor != null) {
        [x, y] = onTrack(car.anchor);
      }
      if (x != null) car.el.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
    }
    requestAnimationFrame(animate);
  }

  // --------------------------------------------------------------------------------- chart
  function historyOf(n, code, teamColour) {
    let h = state.history.get(n);
    if (!h) { h = { laps: new Map(), gaps: new Map(), code, colour: colour(teamColour) }; state.history.set(n, h); }
    return h;
  }

  // A page opened mid-race fills the chart with the laps already run, from the history store
  // (PostgreSQL, when the deployment has one, which /drivers says; else the chart starts at the current lap).
  async function loadLapHistory(raceId) {
    const rows = [];
    let cursor = null;
    try {
      for (let page = 0; page < 20; page++) {
        const q = `limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
        const r = await getJSON(`/api/races/${encodeURIComponent(raceId)}/laps?${q}`);
        rows.push(...r.items);
        cursor = r.next;
        if (!cursor || raceId !== state.raceId) break;
      }
    } catch (e) { /* no history store: live laps only */ }
    if (raceId !== state.raceId || !rows.length) return;
    const lead = new Map();  // lap -> the first crossing of it (the leader's)
    for (const x of rows) if (x.crossing_ms != null && !(lead.get(x.lap) <= x.crossing_ms)) lead.set(x.lap, x.crossing_ms);
    for (const x of rows) {
      const d = state.drivers.get(x.driver_number) || {};
      const h = historyOf(x.driver_number, d.code || String(x.driver_number), d.team_colour);
      if (x.lap_time_ms != null && !h.laps.has(x.lap)) h.laps.set(x.lap, x.lap_time_ms);
      const l0 = lead.get(x.lap), l1 = lead.get(x.lap + 1);
      // the gap on the same lap (as the live tower gives it): none once the car is lapped
      if (x.crossing_ms != null && l0 != null && !(l1 != null && x.crossing_ms > l1) && !h.gaps.has(x.lap)) {
        h.gaps.set(x.lap, x.crossing_ms - l0);
      }
    }
    renderChart();
  }

  function recordHistory(b, prev) {
    for (const r of b.rows || []) {
      const h = historyOf(r.driver_number, r.code, r.team_colour);
      if (r.laps > 0 && r.last_lap_ms != null && !h.laps.has(r.laps)) h.laps.set(r.laps, r.last_lap_ms);
      if (r.laps > 0 && r.gap_laps === 0 && r.gap_ms != null) h.gaps.set(r.laps, r.gap_ms);
      if (r.position === 1 && r.laps > 0) h.gaps.set(r.laps, 0);
    }
    if (!state.chartUserSet && b.rows && b.rows.length) {
      state.chartSel = new Set(b.rows.slice(0, 3).map((r) => r.driver_number));
      const f = b.rows.find((r) => r.code === state.follow);
      if (f) state.chartSel.add(f.driver_number);
    }
    if (!prev || (prev.rows || []).length !== (b.rows || []).length) renderChips();
    else if (!state.chartUserSet) renderChips();
  }

  function renderChips() {
    const box = $("#chart-drivers");
    box.innerHTML = "";
    const rows = (state.board && state.board.rows) || [];
    for (const r of rows) {
      const on = state.chartSel.has(r.driver_number);
      const b = el("button", `chip${on ? " on" : ""}`, esc(r.code));
      b.type = "button";
      b.style.color = on ? colour(r.team_colour) : "";
      b.addEventListener("click", () => {
        state.chartUserSet = true;
        if (state.chartSel.has(r.driver_number)) state.chartSel.delete(r.driver_number); else state.chartSel.add(r.driver_number);
        renderChips(); renderChart();
      });
      box.append(b);
    }
  }

  let chartQueued = false;
  function renderChart() {
    if (chartQueued) return;
    chartQueued = true;
    requestAnimationFrame(() => { chartQueued = false; drawChart(); });
  }

  function drawChart() {
    const cv = $("#chart");
    const dpr = window.devicePixelRatio || 1;
    const w = cv.clientWidth, h = cv.clientHeight;
    if (!w || !h) return;
    if (cv.width !== w * dpr || cv.height !== h * dpr) { cv.width = w * dpr; cv.height = h * dpr; }
    const ctx = cv.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const key = state.chartMode === "laps" ? "laps" : "gaps";
    const series = [...state.chartSel].map((n) => state.history.get(n)).filter(Boolean)
      .map((s) => ({ s, pts: [...s[key].entries()].sort((a, b) => a[0] - b[0]) })).filter((x) => x.pts.length);
    ctx.fillStyle = "#8a92a6"; ctx.font = "11px system-ui, sans-serif";
    if (!series.length) { ctx.fillText("Lap data appears as drivers complete laps.", 12, h / 2); return; }
    let vals = series.flatMap((x) => x.pts.map((p) => p[1]));
    if (key === "laps") {   // ignore outliers (pit laps, safety car) for the scale
      const sorted = [...vals].sort((a, b) => a - b), med = sorted[Math.floor(sorted.length / 2)];
      vals = vals.filter((v) => v < med * 1.15);
    }
    const laps = series.flatMap((x) => x.pts.map((p) => p[0]));
    const x0 = Math.min(...laps), x1 = Math.max(...laps, x0 + 1);
    cv.dataset.laps = `${x0}-${x1}`;  // the laps on the x axis (for tests and tools)
    let y0 = Math.min(...vals), y1 = Math.max(...vals);
    if (y1 - y0 < 1000) { y0 -= 500; y1 += 500; }
    const L = 58, R = 34, T = 12, B = 22;
    const X = (v) => L + (v - x0) / (x1 - x0) * (w - L - R);
    const Y = (v) => T + (Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0) * (h - T - B);  // lower is better: top
    ctx.strokeStyle = "#2a2f3a"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = y0 + (y1 - y0) * i / 4, yy = Y(v);
      ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(w - R, yy); ctx.stroke();
      ctx.fillText(key === "laps" ? fmtLap(Math.round(v)) : `+${(v / 1000).toFixed(1)}s`, 4, yy + 4);
    }
    const step = Math.max(1, Math.ceil((x1 - x0) / 10));
    for (let l = x0; l <= x1; l += step) ctx.fillText(`L${l}`, X(l) - 8, h - 6);
    for (const { s, pts } of series) {
      const followed = s.code === state.follow;
      ctx.strokeStyle = s.colour; ctx.lineWidth = followed ? 3 : 1.6;
      // a lap slower than the scale (pit lap, safety car) breaks the line and shows as an open mark at the bottom
      const off = (v) => v > y1;
      ctx.beginPath();
      pts.forEach(([lap, v], i) => {
        if (off(v)) return;
        if (i && !off(pts[i - 1][1])) ctx.lineTo(X(lap), Y(v)); else ctx.moveTo(X(lap), Y(v));
      });
      ctx.stroke();
      ctx.fillStyle = s.colour;
      for (const [lap, v] of pts) {
        ctx.beginPath(); ctx.arc(X(lap), Y(v), followed ? 3 : 2.2, 0, 2 * Math.PI);
        if (off(v)) { ctx.lineWidth = 1; ctx.stroke(); ctx.lineWidth = followed ? 3 : 1.6; } else ctx.fill();
      }
      const [ll, lv] = pts[pts.length - 1];
      ctx.fillStyle = s.colour; ctx.fillText(s.code, Math.min(X(ll) + 4, w - 30), Y(lv) - 4);
      ctx.fillStyle = "#8a92a6";
    }
  }

  // --------------------------------------------------------------------------------- strategy
  // The dataflow publishes one call per car after every lap; fetch them when the leader completes a lap.
  const CALLS = { BOX_THIS_LAP: "BOX NOW", BOX_IN_WINDOW: "BOX", STAY_OUT: "STAY OUT", NO_CALL: "–" };
  const pct = (p) => (p == null ? "" : `${Math.round(p * 100)}%`);

  async function loadStrategy() {
    const b = state.board;
    const done = b && b.rows && b.rows.length ? Math.max(...b.rows.map((r) => r.laps || 0)) : 0;
    if (done === state.strategyLap || !state.raceId) return;
    state.strategyLap = done;
    const raceId = state.raceId;
    try {
      const s = await getJSON(`/api/races/${encodeURIComponent(raceId)}/strategy`);
      if (raceId === state.raceId) { state.strategy = s; renderStrategy(); }
    } catch (e) { /* no calls yet */ }
  }

  function callText(c) {
    if (c.action === "BOX_THIS_LAP") return `<span class="call call-BOX_THIS_LAP">BOX NOW</span>${esc(c.compound || "")}`;
    if (c.action === "BOX_IN_WINDOW") {
      const w = c.pit_window_start === c.pit_window_end ? `L${c.pit_window_start}` : `L${c.pit_window_start}–${c.pit_window_end}`;
      return `<span class="call call-BOX_IN_WINDOW">BOX</span>${w}${c.compound ? ` → ${esc(c.compound)}` : ""}`;
    }
    return `<span class="call call-${esc(c.action)}">${CALLS[c.action] || esc(c.action)}</span>`;
  }

  function renderStrategy() {
    const s = state.strategy;
    if (!s) return;
    const calls = new Map((s.calls || []).map((c) => [c.driver_number, c]));
    const order = state.board && state.board.rows ? state.board.rows.map((r) => r.driver_number) : [...calls.keys()];
    const tbody = $("#strategy tbody");
    tbody.innerHTML = "";
    for (const n of order) {
      const c = calls.get(n);
      if (!c) continue;
      const d = state.drivers.get(n) || {};
      const row = (state.board && state.board.rows || []).find((r) => r.driver_number === n) || {};
      const code = row.code || d.code || String(n);
      const tr = el("tr");
      tr.dataset.code = code;
      tr.title = c.explanation || "";
      const threat = c.undercut_threat;
      tr.innerHTML = `<td class="c-drv"><span class="teambar"></span>${esc(code)}</td>
        <td class="c-call">${callText(c)}</td>
        <td class="c-pct"><span class="threat${threat >= 0.5 ? " high" : ""}">${pct(threat)}</span></td>
        <td class="c-pct">${pct(c.overcut_chance)}</td>
        <td class="c-exp">${c.expected_position == null ? "" : c.expected_position.toFixed(1)}</td>`;
      // set through the DOM, not a style attribute: the page's CSP allows no inline styles
      tr.querySelector(".teambar").style.background = colour(row.team_colour || d.team_colour);
      tr.classList.toggle("followed", code === state.follow);
      tr.addEventListener("click", () => setFollow(code === state.follow ? null : code));
      tbody.append(tr);
    }
    $("#strategy-lap").textContent = s.lap ? `after lap ${s.lap}` : "calls after each lap";
    $("#strategy-model").textContent = s.model ? `model: ${s.model}` : "";
    const focusRow = [...calls.values()].find((c) => {
      const r = (state.board && state.board.rows || []).find((x) => x.driver_number === c.driver_number);
      return r && r.code === state.follow;
    });
    const focus = $("#strategy-focus");
    focus.hidden = !focusRow;
    if (focusRow) focus.textContent = `${state.follow}: ${focusRow.explanation}`;
  }

  // --------------------------------------------------------------------------------- events feed
  // short labels rather than emoji: headless and minimal systems often have no emoji font
  const ICONS = { OVERTAKE: "PASS", PIT_STOP: "PIT", FLAG: "FLAG", RETIREMENT: "OUT", FASTEST_LAP: "FL", PERSONAL_BEST: "PB",
    LAST_LAP_HERO: "HERO", RACE_START: "GO", CHEQUERED_FLAG: "END", FINISHED: "FIN", CLASSIFICATION: "RES", PENALTY: "PEN",
    RACE_CONTROL: "RC", TEAM_RADIO: "RADIO" };
  const SHOWN = new Set(["OVERTAKE", "PIT_STOP", "FLAG", "RETIREMENT", "FASTEST_LAP", "LAST_LAP_HERO", "RACE_START",
    "CHEQUERED_FLAG", "PENALTY", "CLASSIFICATION", "TEAM_RADIO"]);
  // race control's own voice, in its panel: flags, penalties, its messages, the start and the flag
  const RACE_CONTROL = new Set(["FLAG", "PENALTY", "RACE_CONTROL", "RACE_START", "CHEQUERED_FLAG"]);

  function describe(e) {
    if (e.message) return e.message;
    switch (e.type) {
      case "OVERTAKE": return `${e.code} passes ${e.other_code}`;
      case "PIT_STOP": return `${e.code} pits${e.pit_lane_ms ? ` (${(e.pit_lane_ms / 1000).toFixed(1)} s in the lane)` : ""}`;
      case "FASTEST_LAP": return `Fastest lap: ${e.code} ${fmtLap(e.lap_time_ms)}`;
      case "LAST_LAP_HERO": return `Last-lap hero: ${e.code} ${fmtLap(e.lap_time_ms)}`;
      case "RETIREMENT": return `${e.code} retires`;
      case "FLAG": return `Track status: ${e.track_status}`;
      default: return `${e.type}${e.code ? ` ${e.code}` : ""}`;
    }
  }

  function addFeed(kind, data, id, live) {
    if (kind === "event" && RACE_CONTROL.has(data.type)) addLine($("#rc"), kind, data, id, live);
    if (kind === "event" && !SHOWN.has(data.type)) return;
    addLine($("#feed"), kind, data, id, live);
  }

  function addLine(feed, kind, data, id, live) {
    const li = el("li", kind === "event" ? data.type : kind);
    li.dataset.id = id || "";
    const text = kind === "commentary" ? data.text : kind === "gap" ? data.message : describe(data);
    const icon = kind === "commentary" ? "MIC" : kind === "gap" ? "GAP" : (ICONS[data.type] || "•");
    // (a session ordered by best lap has no race laps to tell the time by)
    const lap = data.lap != null && !timed(state.board) ? `L${data.lap}` : "";
    li.innerHTML = `<span class="lap">${lap}</span><span class="icon">${icon}</span><span class="text">${esc(text)}</span>`;
    if (kind === "commentary") li.classList.add("commentary");
    feed.prepend(li);
    while (feed.children.length > 150) feed.lastChild.remove();
    if (feed.id === "feed") state.feedCount++;
    if (!live) li.style.animation = "none";
  }

  // --------------------------------------------------------------------------------- wiring
  $("#race-picker").addEventListener("change", (e) => openRace(e.target.value));
  document.querySelectorAll(".seg button").forEach((b) => b.addEventListener("click", () => {
    document.querySelectorAll(".seg button").forEach((x) => x.classList.toggle("on", x === b));
    state.chartMode = b.dataset.mode;
    renderChart();
  }));
  window.addEventListener("resize", renderChart);
  if (state.follow) $("#follow-label").textContent = `following ${state.follow}`;

  (async () => {
    const races = await loadRaceList();
    // a link to a race that has not started yet waits for it (it is not swapped for another race)
    const wanted = params.get("race");
    const pick = (list) => (wanted ? list.find((r) => r.race_id === wanted)
      : list.find((r) => r.status === "live") || list[0]);
    const start = pick(races);
    if (start) { $("#race-picker").value = start.race_id; openRace(start.race_id); }
    else setConn("connecting", wanted ? `waiting for ${wanted}` : "waiting for a race");
    // keep the list fresh; open the race once it is there (looked for every 2 s while waiting for it)
    const refresh = async () => {
      const list = await loadRaceList();
      const next = state.raceId ? null : pick(list);
      if (next) { $("#race-picker").value = next.race_id; openRace(next.race_id); }
      setTimeout(refresh, state.raceId || !wanted ? 10000 : 2000);
    };
    setTimeout(refresh, state.raceId || !wanted ? 10000 : 2000);
  })();
})();
