// The staff page: find stock here and nearby, hold it or order a delivery, watch it live, and
// the ops view. Plain JavaScript served by the daemon; it talks only to this daemon's /v1 API.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const KEY = "omnistock.key"; // sessionStorage: gone when the tab closes
  const STORE = "omnistock.store"; // localStorage: the tablet's store, chosen once
  const LANG = "omnistock.lang";
  const OPS_EVERY_MS = 10000;
  const READY_EVERY_MS = 15000;

  // The map's projection: the same as tools/taiwan-map/extract.mjs wrote taiwan.svg with.
  const PROJECTION = { west: 119.2, north: 25.4, k: Math.cos((23.7 * Math.PI) / 180), width: 1000, spanLon: 3.0 };
  PROJECTION.scale = PROJECTION.width / (PROJECTION.spanLon * PROJECTION.k);
  const project = (lat, lon) => [
    (lon - PROJECTION.west) * PROJECTION.k * PROJECTION.scale,
    (PROJECTION.north - lat) * PROJECTION.scale,
  ];

  // Customers' cities for a delivery (coordinates from deploy/demo/tw_cities.csv).
  const CITIES = [
    ["Taipei", "台北市", 25.05306, 121.52639], ["New Taipei", "新北市", 25.06199, 121.45703],
    ["Keelung", "基隆市", 25.13089, 121.74094], ["Taoyuan", "桃園市", 24.99368, 121.29696],
    ["Hsinchu", "新竹市", 24.80361, 120.96861], ["Zhubei", "竹北市", 24.83833, 121.00778],
    ["Toufen", "頭份市", 24.68753, 120.90942], ["Taichung", "台中市", 24.1469, 120.6839],
    ["Changhua", "彰化市", 24.0692, 120.5512], ["Nantou", "南投市", 23.91566, 120.66387],
    ["Douliu", "斗六市", 23.70944, 120.54333], ["Chiayi", "嘉義市", 23.47917, 120.44889],
    ["Tainan", "台南市", 22.99083, 120.21333], ["Kaohsiung", "高雄市", 22.61626, 120.31333],
    ["Hualien", "花蓮市", 23.97694, 121.60444], ["Taitung", "台東市", 22.75991, 121.14457],
  ];

  const state = {
    key: sessionStorage.getItem(KEY),
    lang: "en",
    scopes: [],
    bound: null,
    locations: [],
    byId: new Map(),
    store: null,
    sku: null,
    levels: new Map(),
    nearby: [],
    view: "find",
    banners: new Map(),
    stream: null,
    token: null,
    tokenExpires: 0,
    refreshTimer: null,
    opsTimer: null,
    holdStore: null,
    holdOpener: null,
    lastRoute: null,
  };

  // ---- language -------------------------------------------------------------------------
  function pickLang() {
    const saved = localStorage.getItem(LANG);
    if (saved && window.I18N[saved]) return saved;
    const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    return wanted.some((l) => /^zh/i.test(l)) ? "zh-TW" : "en";
  }
  function t(key, vars) {
    const s = window.I18N[state.lang][key] ?? window.I18N.en[key] ?? key;
    return s.replace(/\{(\w+)\}/g, (_, k) => (vars && vars[k] !== undefined ? String(vars[k]) : ""));
  }
  function applyLang() {
    document.documentElement.lang = state.lang;
    $("lang").value = state.lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    for (const el of document.querySelectorAll("[data-i18n-attr]")) {
      const [attr, key] = el.dataset.i18nAttr.split(":");
      el.setAttribute(attr, t(key));
    }
    document.title = "omnistock · " + t("tagline");
    renderCities();
    renderStorePicker();
    renderBanners();
    renderPermissions();
    if (state.sku) renderFind();
    if (state.history) renderHistory();
    if (state.lastRoute) renderRoute(state.lastRoute);
    $("flash").replaceChildren();
    if (state.view === "holds") loadHolds();
    if (state.view === "ops" && state.lastOps) renderOps(state.lastOps);
  }

  // ---- formatting ------------------------------------------------------------------------
  const fmtNum = (n) => (n === null || n === undefined ? t("unknown") : Number(n).toLocaleString(state.lang));
  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 90) return t("dur_s", { n: s });
    if (s < 5400) return t("dur_m", { n: Math.round(s / 60) });
    if (s < 172800) return t("dur_h", { n: Math.round(s / 3600) });
    return t("dur_d", { n: Math.round(s / 86400) });
  }
  function ago(ts) {
    if (!ts) return t("never");
    const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
    if (s < 90) return t("ago_s", { n: Math.round(s) });
    if (s < 5400) return t("ago_m", { n: Math.round(s / 60) });
    if (s < 172800) return t("ago_h", { n: Math.round(s / 3600) });
    return t("ago_d", { n: Math.round(s / 86400) });
  }
  const when = (ts) => new Date(ts).toLocaleString(state.lang, { dateStyle: "short", timeStyle: "short" });
  const freshness = (l) =>
    [
      l.last_movement_at ? t("fresh_moved", { age: ago(l.last_movement_at) }) : t("fresh_never_moved"),
      l.last_count_at ? t("fresh_counted", { age: ago(l.last_count_at) }) : t("fresh_never_counted"),
    ].join(" · ");
  const storeName = (id) => (state.byId.get(id) ? state.byId.get(id).name : id);
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "dataset") Object.assign(e.dataset, v);
      else if (k in e && typeof v !== "string") e[k] = v;
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function randomId() {
    const b = new Uint8Array(4);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  const refOf = (id) => id.replace(/-[0-9a-f]{8}$/, "");

  // ---- banners (daemon or a dependency down, live stream lost) -------------------------------
  function banner(id, key, vars) {
    state.banners.set(id, { key, vars });
    renderBanners();
  }
  function clearBanner(id) {
    if (state.banners.delete(id)) renderBanners();
  }
  function renderBanners() {
    const box = $("banners");
    box.replaceChildren(...[...state.banners.entries()].map(([id, b]) => el("p", { class: "banner", dataset: { banner: id } }, t(b.key, b.vars))));
  }
  let flashTimer = null;
  function flash(text, kind) {
    $("flash").replaceChildren(el("p", { class: "flash-msg " + (kind || "ok") }, text));
    clearTimeout(flashTimer);
    flashTimer = setTimeout(() => $("flash").replaceChildren(), 15000);
  }

  // ---- the API -------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || "HTTP " + status);
      this.status = status;
      this.body = body;
    }
  }
  async function api(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        cache: "no-store",
        headers: Object.assign({ Authorization: "Bearer " + state.key }, body ? { "Content-Type": "application/json" } : {}),
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      banner("down", "err_down");
      throw new ApiError(0, null);
    }
    clearBanner("down");
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.status === 503) banner("dependency", "err_dependency", { what: (data && data.message) || "503" });
    else clearBanner("dependency");
    if (res.status === 401) {
      signOut("key_unknown");
      throw new ApiError(401, data);
    }
    if (!res.ok) throw new ApiError(res.status, data);
    return data;
  }
  function explain(e) {
    if (e.status === 0 || e.status === 503) return null; // the banner says it
    if (e.status === 403) return t("err_forbidden");
    if (e.status === 429) return t("err_rate");
    return t("err_generic", { message: e.message });
  }
  const enc = encodeURIComponent;

  async function checkReady() {
    try {
      const res = await fetch("/readyz", { cache: "no-store" });
      clearBanner("down");
      const body = await res.json().catch(() => null);
      const down = body && body.checks ? Object.entries(body.checks).filter(([, v]) => v !== "up").map(([k]) => k) : [];
      if (down.length) banner("ready", "err_ready", { what: down.join(", ") });
      else clearBanner("ready");
    } catch (e) {
      banner("down", "err_down");
    }
  }

  // ---- key and who we are ------------------------------------------------------------------
  async function signIn(key) {
    state.key = key;
    let me;
    try {
      me = await api("GET", "/v1/whoami");
    } catch (e) {
      if (e.status !== 401) $("key-error").textContent = explain(e) || t("err_down");
      return false;
    }
    if (!me.scopes.includes("read")) {
      state.key = null;
      $("key-error").textContent = t("key_needs_read");
      return false;
    }
    sessionStorage.setItem(KEY, key);
    state.scopes = me.scopes;
    state.bound = me.location_id;
    const locs = await api("GET", "/v1/locations");
    state.locations = locs.locations;
    state.byId = new Map(state.locations.map((l) => [l.location_id, l]));
    const stores = state.locations.filter((l) => l.kind === "store");
    const saved = localStorage.getItem(STORE);
    state.store = state.bound || (state.byId.has(saved) ? saved : stores[0] && stores[0].location_id) || null;
    $("view-key").hidden = true;
    $("tabs").hidden = false;
    $("sign-out").hidden = false;
    renderStorePicker();
    renderPermissions();
    show("find");
    $("sku-input").focus();
    return true;
  }
  function signOut(reasonKey) {
    sessionStorage.removeItem(KEY);
    state.key = null;
    state.sku = null;
    closeStream();
    stopOps();
    for (const id of ["view-find", "view-holds", "view-ops"]) $(id).hidden = true;
    $("tabs").hidden = true;
    $("sign-out").hidden = true;
    $("view-key").hidden = false;
    $("key-error").textContent = reasonKey ? t(reasonKey) : "";
    $("key-input").value = "";
    $("key-input").focus();
  }
  const canReserve = () => state.scopes.includes("reserve");
  // Why an action button is disabled (null: it is not).
  function actReason(locationId) {
    if (!canReserve()) return t("read_only");
    if (state.bound && locationId && locationId !== state.bound) return t("other_store_only", { store: storeName(state.bound) });
    return null;
  }
  function renderPermissions() {
    const reason = actReason(null);
    const p = $("act-reason");
    p.textContent = reason || "";
    p.hidden = !reason;
    for (const b of document.querySelectorAll("#deliver-form button, #deliver-form input, #deliver-form select")) b.disabled = !!reason;
  }

  function renderStorePicker() {
    const sel = $("store-picker");
    const stores = state.locations.filter((l) => l.kind === "store" && (!state.bound || l.location_id === state.bound));
    sel.replaceChildren(...stores.map((l) => el("option", { value: l.location_id }, `${l.name} (${l.location_id})`)));
    sel.value = state.store || "";
    sel.disabled = !!state.bound || stores.length < 2;
  }

  // ---- views ---------------------------------------------------------------------------------
  function show(view) {
    state.view = view;
    for (const b of document.querySelectorAll(".tab")) {
      if (b.dataset.view === view) b.setAttribute("aria-current", "page");
      else b.removeAttribute("aria-current");
    }
    $("view-find").hidden = view !== "find";
    $("view-holds").hidden = view !== "holds";
    $("view-ops").hidden = view !== "ops";
    if (view === "ops") startOps();
    else stopOps();
    if (view === "holds") loadHolds();
  }

  // ---- find ----------------------------------------------------------------------------------
  async function search(sku) {
    state.sku = sku;
    state.history = null;
    $("history").hidden = true;
    $("route-result").replaceChildren();
    state.lastRoute = null;
    await refresh();
    connectStream();
  }
  async function refresh() {
    const sku = state.sku;
    const here = state.byId.get(state.store);
    if (!sku || !here) return;
    const radius = $("radius").value;
    try {
      const [levels, nearby] = await Promise.all([
        api("GET", `/v1/levels/${enc(sku)}`),
        api("GET", `/v1/availability/${enc(sku)}/nearby?lat=${here.lat}&lon=${here.lon}&radius_km=${radius}&limit=10`),
      ]);
      if (sku !== state.sku) return;
      state.levels = new Map(levels.levels.map((l) => [l.location_id, l]));
      state.nearby = nearby.stores.filter((s) => s.location_id !== state.store);
      $("sku-error").textContent = levels.levels.length ? "" : t("not_found_sku");
      renderFind();
    } catch (e) {
      const m = explain(e);
      if (m) $("sku-error").textContent = m;
    }
  }
  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    state.refreshTimer = setTimeout(refresh, 1000);
  }
  function renderFind() {
    $("find-results").hidden = false;
    const here = state.levels.get(state.store);
    $("here-name").textContent = storeName(state.store);
    $("here-available").textContent = here ? fmtNum(here.available) : "0";
    $("here-on-hand").textContent = here ? fmtNum(here.on_hand) : "0";
    $("here-reserved").textContent = here ? fmtNum(here.reserved) : "0";
    $("here-fresh").textContent = here ? freshness(here) : t("no_level");
    const list = $("nearby");
    list.replaceChildren(
      ...state.nearby.map((s) => {
        const loc = state.byId.get(s.location_id);
        const reason = actReason(s.location_id) || (s.pickup ? null : t("pickup_off"));
        const reasonId = "why-" + s.location_id;
        const button = el("button", { type: "button", class: "act", dataset: { hold: s.location_id } }, t("hold_here"));
        if (reason) {
          button.disabled = true;
          button.setAttribute("aria-describedby", reasonId);
        }
        return el(
          "li",
          { class: "store", dataset: { location: s.location_id } },
          el("div", { class: "store-main" },
            el("span", { class: "store-name" }, loc ? loc.name : s.name),
            el("span", { class: "store-dist" }, t("distance", { km: s.distance_km.toLocaleString(state.lang) }))),
          el("div", { class: "store-qty" },
            el("span", { class: "label" }, t("available") + " "),
            el("strong", { class: "qty-available", dataset: { field: "available" } }, fmtNum(s.available))),
          el("div", { class: "fresh" }, freshness(s)),
          el("div", { class: "store-act" }, button, reason ? el("span", { id: reasonId, class: "why" }, reason) : null),
        );
      }),
    );
    $("nearby-empty").hidden = state.nearby.length > 0;
    renderMap();
  }
  function renderMap() {
    const g = $("map-stores");
    const ns = "http://www.w3.org/2000/svg";
    const nodes = [];
    for (const l of state.locations) {
      if (l.kind !== "store") continue;
      const [x, y] = project(l.lat, l.lon);
      const lv = state.levels.get(l.location_id);
      const have = lv && lv.available > 0;
      const c = document.createElementNS(ns, "circle");
      c.setAttribute("cx", x.toFixed(1));
      c.setAttribute("cy", y.toFixed(1));
      c.setAttribute("r", l.location_id === state.store ? "18" : "13");
      c.setAttribute("class", "marker " + (l.location_id === state.store ? "here" : have ? "have" : "none"));
      c.dataset.location = l.location_id;
      const title = document.createElementNS(ns, "title");
      title.textContent = `${l.name}: ${t("available")} ${lv ? lv.available : 0}`;
      c.append(title);
      nodes.push(c);
    }
    // This store on top.
    nodes.sort((a, b) => (a.classList.contains("here") ? 1 : 0) - (b.classList.contains("here") ? 1 : 0));
    g.replaceChildren(...nodes);
  }

  async function showHistory() {
    try {
      state.history = await api("GET", `/v1/movements?sku=${enc(state.sku)}&location_id=${enc(state.store)}&limit=20`);
      renderHistory();
      $("history").hidden = false;
    } catch (e) {
      const m = explain(e);
      if (m) flash(m, "error");
    }
  }
  function renderHistory() {
    const rows = $("history-rows");
    const list = state.history ? state.history.movements : [];
    rows.replaceChildren(
      ...list.map((m) =>
        el("tr", {},
          el("td", {}, when(m.occurred_at)),
          el("td", {}, t("kind_" + m.kind) + (m.applied ? "" : " " + t("not_applied"))),
          el("td", { class: "num" }, fmtNum(m.quantity)),
          el("td", { class: "num" }, fmtNum(m.on_hand_after)),
          el("td", {}, [m.source, m.reference].filter(Boolean).join(" · ")))),
    );
    if (!list.length) rows.replaceChildren(el("tr", {}, el("td", { colspan: "5" }, t("history_empty"))));
  }

  // ---- hold ----------------------------------------------------------------------------------
  function openHold(locationId, opener) {
    const s = state.nearby.find((x) => x.location_id === locationId);
    state.holdStore = locationId;
    state.holdOpener = opener;
    $("hold-where").textContent = t("hold_where", { sku: state.sku, store: storeName(locationId), n: s ? s.available : 0 });
    $("hold-error").textContent = "";
    $("hold-qty").value = "1";
    $("hold-ref").value = "";
    $("hold-dialog").showModal();
    $("hold-qty").focus();
  }
  function closeHold() {
    $("hold-dialog").close();
    if (state.holdOpener && document.body.contains(state.holdOpener)) state.holdOpener.focus();
    else $("sku-input").focus();
  }
  function readQty(input) {
    const n = Number(input.value);
    return Number.isInteger(n) && n >= 1 && n <= 1000 ? n : null;
  }
  async function submitHold(ev) {
    ev.preventDefault();
    const qty = readQty($("hold-qty"));
    const ref = $("hold-ref").value.trim();
    if (!qty) return void ($("hold-error").textContent = t("qty_invalid"));
    if (!ref) return void ($("hold-error").textContent = t("ref_required"));
    const store = state.holdStore;
    const id = `${ref}-${randomId()}`;
    $("hold-confirm").disabled = true;
    try {
      const r = await api("POST", "/v1/reservations", {
        reservation_id: id,
        location_id: store,
        lines: [{ sku: state.sku, quantity: qty }],
        ttl_seconds: Number($("hold-ttl").value),
      });
      closeHold();
      flash(t("hold_done", { n: qty, sku: state.sku, store: storeName(store), ref, until: when(r.expires_at) }));
      await refresh();
    } catch (e) {
      if (e.status === 409 && e.body && e.body.details && e.body.details.lines) {
        const l = e.body.details.lines[0];
        $("hold-error").textContent = t("hold_short", { requested: l.requested, available: l.available });
      } else {
        $("hold-error").textContent = explain(e) || t("err_down");
      }
    } finally {
      $("hold-confirm").disabled = false;
    }
  }

  // ---- delivery (endless aisle) --------------------------------------------------------------
  function renderCities() {
    const sel = $("deliver-city");
    const v = sel.value;
    sel.replaceChildren(...CITIES.map(([en, zh], i) => el("option", { value: String(i) }, state.lang === "en" ? en : zh)));
    if (v) sel.value = v;
  }
  async function submitDelivery(ev) {
    ev.preventDefault();
    const qty = readQty($("deliver-qty"));
    const ref = $("deliver-ref").value.trim();
    const out = $("route-result");
    if (!state.sku) return;
    if (!qty) return void out.replaceChildren(el("p", { class: "error" }, t("qty_invalid")));
    if (!ref) return void out.replaceChildren(el("p", { class: "error" }, t("ref_required")));
    const [, , lat, lon] = CITIES[Number($("deliver-city").value)] || CITIES[0];
    const body = {
      order_id: `${ref}-${randomId()}`,
      lines: [{ sku: state.sku, quantity: qty }],
      fulfilment: "delivery",
      customer: { lat, lon },
      placed_at_location_id: state.store,
    };
    try {
      const r = await api("POST", "/v1/orders/route", body);
      state.lastRoute = { ok: true, answer: r };
      await refresh();
    } catch (e) {
      if (e.status === 409 && e.body && e.body.error === "no_fulfilment_option") {
        state.lastRoute = { ok: false, answer: { explanation: e.body.details.explanation || [] } };
      } else {
        const m = explain(e);
        if (m) out.replaceChildren(el("p", { class: "error" }, m));
        return;
      }
    }
    renderRoute(state.lastRoute);
  }
  function renderRoute(route) {
    const out = $("route-result");
    const a = route.answer;
    const head = route.ok
      ? t("route_ok", {
          where: a.assignments.map((x) => `${storeName(x.location_id)} (${t("distance", { km: x.distance_km })})`).join(", "),
          until: a.assignments[0] && a.assignments[0].expires_at ? when(a.assignments[0].expires_at) : "–",
        })
      : t("route_none");
    // The chosen locations first, then the others nearest first (the server's order). The
    // server's reason is plain English; other languages get the reason code's own sentence.
    const explanation = [...(a.explanation || [])].sort((p, q) => (q.decision === "chosen") - (p.decision === "chosen"));
    const items = explanation.map((x) =>
      el("li", { class: x.decision === "chosen" ? "chosen" : "skipped", dataset: { location: x.location_id, code: x.code || "" } },
        el("strong", {}, storeName(x.location_id)),
        ` (${t("distance", { km: x.distance_km })}): `,
        state.lang === "en" && x.reason ? x.reason : t("code_" + x.code)),
    );
    out.replaceChildren(
      el("p", { class: route.ok ? "ok" : "error", id: "route-head" }, head),
      el("p", {}, t("route_why")),
      el("ol", { class: "explanation" }, ...items),
    );
  }

  // ---- holds ---------------------------------------------------------------------------------
  async function loadHolds() {
    try {
      const r = await api("GET", "/v1/reservations?status=held&limit=100");
      const rows = r.reservations.map((h) => {
        const reason = actReason(h.location_id);
        const ext = el("button", { type: "button", class: "act", dataset: { extend: h.reservation_id } }, t("extend"));
        const rel = el("button", { type: "button", class: "act danger", dataset: { release: h.reservation_id } }, t("release"));
        if (reason) ext.disabled = rel.disabled = true;
        return el("tr", { dataset: { reservation: h.reservation_id } },
          el("td", {}, refOf(h.reservation_id)),
          el("td", {}, storeName(h.location_id)),
          el("td", {}, h.lines.map((l) => `${l.sku} × ${l.held}`).join(", ")),
          el("td", {}, h.expires_at ? when(h.expires_at) : "–"),
          el("td", {}, ext, " ", rel));
      });
      $("holds-rows").replaceChildren(...rows);
      $("holds-empty").hidden = rows.length > 0;
      $("holds-table").hidden = rows.length === 0;
    } catch (e) {
      const m = explain(e);
      if (m) flash(m, "error");
    }
  }
  async function holdAction(id, action) {
    try {
      if (action === "extend") {
        const r = await api("PATCH", `/v1/reservations/${enc(id)}`, { ttl_seconds: 7200 });
        flash(t("extended", { ref: refOf(id), until: when(r.expires_at) }));
      } else {
        await api("DELETE", `/v1/reservations/${enc(id)}`);
        flash(t("released", { ref: refOf(id) }));
      }
    } catch (e) {
      const m = explain(e);
      if (m) flash(m, "error");
    }
    await loadHolds();
    $("holds-refresh").focus();
  }

  // ---- live ----------------------------------------------------------------------------------
  // An EventSource cannot send the key in a header, and the key never goes into a URL: the
  // stream is opened with a short-lived token the key buys (POST /v1/stream/token).
  function closeStream() {
    if (state.stream) state.stream.close();
    state.stream = null;
    clearTimeout(state.streamRetry);
  }
  async function connectStream() {
    closeStream();
    const sku = state.sku;
    if (!sku || !state.key) return;
    try {
      if (!state.token || Date.now() > state.tokenExpires - 30000) {
        const tk = await api("POST", "/v1/stream/token");
        state.token = tk.token;
        state.tokenExpires = Date.parse(tk.expires_at);
      }
    } catch (e) {
      banner("live", "err_live");
      state.streamRetry = setTimeout(connectStream, 5000);
      return;
    }
    if (sku !== state.sku) return;
    const es = new EventSource(`/v1/stream?sku=${enc(sku)}&token=${enc(state.token)}`);
    state.stream = es;
    let lost = false;
    es.onopen = () => {
      clearBanner("live");
      document.body.dataset.live = "on";
      // Nothing is replayed: after a gap, read the state again.
      if (lost) refresh();
      lost = false;
    };
    es.onerror = () => {
      lost = true;
      document.body.dataset.live = "off";
      banner("live", "err_live");
      if (es.readyState === EventSource.CLOSED) {
        // Refused (an expired token, the daemon restarted with another secret): a new token.
        state.token = null;
        state.streamRetry = setTimeout(connectStream, 3000);
      }
    };
    es.addEventListener("change", (ev) => {
      let c;
      try {
        c = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      onChange(c);
    });
    es.addEventListener("lagged", () => refresh());
  }
  function onChange(c) {
    if (c.sku !== state.sku) return;
    const lv = state.levels.get(c.location_id) || { location_id: c.location_id };
    Object.assign(lv, { on_hand: c.on_hand, reserved: c.reserved, available: c.available });
    state.levels.set(c.location_id, lv);
    const s = state.nearby.find((x) => x.location_id === c.location_id);
    if (s) s.available = c.available;
    renderFind();
    // The order of nearby stores and the freshness may have changed too.
    scheduleRefresh();
  }

  // ---- ops -----------------------------------------------------------------------------------
  function startOps() {
    stopOps();
    loadOps();
    state.opsTimer = setInterval(loadOps, OPS_EVERY_MS);
  }
  function stopOps() {
    clearInterval(state.opsTimer);
    state.opsTimer = null;
  }
  async function loadOps() {
    try {
      state.lastOps = await api("GET", "/v1/ops/summary");
      renderOps(state.lastOps);
    } catch (e) {
      const m = explain(e);
      if (m) flash(m, "error");
    }
  }
  const badge = (light) => el("span", { class: "light " + light, dataset: { light } }, t("light_" + light));
  function renderOps(o) {
    $("ops-overall").replaceChildren(t("ops_overall", { light: "" }), badge(o.light));
    const n = o.network;
    $("ops-network").replaceChildren(t("ops_network", { lag: fmtNum(n.consumer_lag), light: t("light_" + n.consumer_lag_light) }));
    // Worst first: what needs a look is at the top.
    const rank = { red: 0, amber: 1, unknown: 2, green: 3 };
    const rows = [...o.locations].sort((a, b) => rank[a.light] - rank[b.light] || a.location_id.localeCompare(b.location_id));
    $("ops-rows").replaceChildren(
      ...rows.map((l) =>
        el("tr", { dataset: { location: l.location_id, light: l.light } },
          el("th", { scope: "row" }, `${l.name} (${l.location_id})`),
          el("td", {}, badge(l.light)),
          el("td", { class: "m " + l.lights.sync_delay }, l.sync_delay_seconds === null ? t("never") : ago(l.last_movement_at)),
          el("td", { class: "m " + l.lights.commit_delay }, l.commit_delay_seconds === null ? "–" : duration(l.commit_delay_seconds)),
          el("td", { class: "m num " + l.lights.dead_letters }, fmtNum(l.dead_letters_last_hour)),
          el("td", { class: "m num " + l.lights.stockouts }, fmtNum(l.stockouts)),
          el("td", { class: "num" }, `${fmtNum(l.holds_held)} (${fmtNum(l.holds_expiring)})`))),
    );
    const th = o.thresholds;
    $("ops-thresholds").replaceChildren(
      el("li", {}, t("thr_sync", { amber: duration(th.sync_delay_amber_seconds), red: duration(th.sync_delay_red_seconds) })),
      el("li", {}, t("thr_commit", { amber: duration(th.commit_delay_amber_seconds), red: duration(th.commit_delay_red_seconds) })),
      el("li", {}, t("thr_dead", { amber: fmtNum(th.dead_letters_amber), red: fmtNum(th.dead_letters_red) })),
      el("li", {}, t("thr_stockouts", { amber: fmtNum(th.stockouts_amber), red: fmtNum(th.stockouts_red) })),
      el("li", {}, t("thr_lag", { amber: fmtNum(th.consumer_lag_amber), red: fmtNum(th.consumer_lag_red) })),
      el("li", {}, t("thr_expiring", { s: duration(th.holds_expiring_seconds) })),
    );
  }

  // ---- wiring --------------------------------------------------------------------------------
  function init() {
    state.lang = pickLang();
    applyLang();
    $("lang").addEventListener("change", () => {
      state.lang = $("lang").value;
      localStorage.setItem(LANG, state.lang);
      applyLang();
    });
    $("key-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      $("key-error").textContent = "";
      if (key) await signIn(key);
    });
    $("sign-out").addEventListener("click", () => signOut(null));
    $("store-picker").addEventListener("change", () => {
      state.store = $("store-picker").value;
      localStorage.setItem(STORE, state.store);
      state.history = null;
      $("history").hidden = true;
      if (state.sku) refresh();
    });
    for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => show(b.dataset.view));
    $("sku-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const sku = $("sku-input").value.trim();
      if (!sku || [...sku].length > 128 || /[\u0000-\u001f\u007f]/.test(sku)) {
        $("sku-error").textContent = t("sku_invalid");
        return;
      }
      $("sku-error").textContent = "";
      search(sku);
      // A scanner types the next code into the same field: select it for overwriting.
      $("sku-input").select();
    });
    $("radius").addEventListener("change", () => state.sku && refresh());
    $("history-button").addEventListener("click", showHistory);
    $("nearby").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-hold]");
      if (b && !b.disabled) openHold(b.dataset.hold, b);
    });
    $("hold-form").addEventListener("submit", submitHold);
    $("hold-cancel").addEventListener("click", closeHold);
    $("deliver-form").addEventListener("submit", submitDelivery);
    $("holds-refresh").addEventListener("click", loadHolds);
    $("holds-rows").addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (!b || b.disabled) return;
      if (b.dataset.extend) holdAction(b.dataset.extend, "extend");
      if (b.dataset.release) holdAction(b.dataset.release, "release");
    });
    // Ages ("5 min ago") move on by themselves.
    setInterval(() => state.sku && state.view === "find" && renderFind(), 30000);
    checkReady();
    setInterval(checkReady, READY_EVERY_MS);
    if (state.key) signIn(state.key).then((ok) => ok || signOut(null));
    else $("key-input").focus();
  }
  document.addEventListener("DOMContentLoaded", init);
})();
