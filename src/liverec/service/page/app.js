/* liverec live page: plain JavaScript, no build step, no dependencies.
 *
 * Talks to the JSON API of the same origin: /ready, /items, /recommendations,
 * /events, /users, /stats. Every list-changing call goes through one queue so
 * responses are rendered in the order the reader acted.
 */
(() => {
  "use strict";

  const K = 10;                       // recommendations shown
  const STATS_EVERY_MS = 2000;        // live panel refresh
  const WINDOW_BUCKETS = 36;          // chart window (x bucket_seconds)
  const LS_USER = "liverec.user";
  const LS_KEY = "liverec.apiKey";
  const SUGGESTED = ["ana", "ben", "cleo", "dana"];
  const KINDS = [
    { kind: "click", label: "Click", past: "Clicked" },
    { kind: "like", label: "Like", past: "Liked" },
    { kind: "skip", label: "Skip", past: "Skipped" },
    { kind: "purchase", label: "Buy", past: "Bought" },
  ];
  const PAST = Object.fromEntries(KINDS.map((k) => [k.kind, k.past]));
  // What each source means to a reader: its internal name never shows on the page.
  const PLAIN = {
    content: "similar", trending: "trending", ease: "goes with", als: "your taste", bpr: "your taste",
    itemknn: "together", userknn: "people", transition: "next", sequence: "next", tfidf: "words",
    neural: "predicted", pop: "popular",
  };
  const VARIANT_COLORS = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626"];

  const state = {
    key: load(LS_KEY),
    open: true,
    user: null,
    prevPos: new Map(),       // item -> position in the list shown before
    items: new Map(),         // item id -> attributes (cache for bylines)
    texts: new Map(),         // item id -> its text (the description shown with the full reason)
    pending: new Map(),       // item id -> in-flight fetch promise
    badImages: new Set(),     // cover URLs that failed once: not retried
    chain: Promise.resolve(), // serialises list-changing work
    varColors: new Map(),
    statsTimer: null,
    statsBusy: false,
    lastStats: null,
    interestsDirty: false,
    itemsAsked: null,         // catalog size when an empty list was last asked again
  };

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ------------------------------------------------------------------ helpers
  function load(k) {
    try { return localStorage.getItem(k); } catch (_) { return null; }
  }
  function save(k, v) {
    try { v == null ? localStorage.removeItem(k) : localStorage.setItem(k, v); } catch (_) { /* private mode */ }
  }

  /** Create an element: h("div", {class: "x", dataset: {item: "1"}}, child, "text", ...). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "text") el.textContent = v;
      // Through the CSSOM: the Content-Security-Policy (style-src 'self') blocks style attributes.
      else if (k === "style") el.style.cssText = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, v);
    if (text != null) el.textContent = text;
    return el;
  }

  const fmtInt = (n) => (n == null ? "–" : Number(n).toLocaleString("en-US"));
  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return "–";
    return ms < 10 ? ms.toFixed(1) + " ms" : Math.round(ms) + " ms";
  }
  function fmtPct(x, digits = 1) {
    return x == null || !isFinite(x) ? "–" : (x * 100).toFixed(digits) + "%";
  }
  function fmtRate(x) {
    if (x == null || !isFinite(x)) return "–";
    return x === 0 ? "0" : x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2);
  }

  /** "Title (Series, #2)" -> ["Title", "Series, #2"]. */
  function splitTitle(t) {
    const m = /^(.*?)\s*\(([^()]*#[^()]*)\)\s*$/.exec(t || "");
    return m && m[1] ? [m[1], m[2]] : [t || "", null];
  }
  function initials(t) {
    const words = splitTitle(t)[0].replace(/^(the|a|an)\s+/i, "").split(/\s+/).filter((w) => /\w/.test(w));
    return (words.slice(0, 2).map((w) => w.replace(/[^\p{L}\p{N}]/gu, "")[0] || "").join("") || "?").toUpperCase();
  }
  function byline(a) {
    if (!a) return "";
    const parts = [];
    if (a.authors) {
      const list = String(a.authors).split(",").map((x) => x.trim()).filter(Boolean);
      parts.push(list.length > 1 ? `${list[0]} +${list.length - 1}` : list[0]);
    }
    if (a.year != null && a.year !== "") parts.push(String(a.year));
    if (a.average_rating != null) parts.push(`★ ${Number(a.average_rating).toFixed(2)}`);
    return parts.join(" · ");
  }
  function titleOf(item) {
    const a = state.items.get(item);
    return (a && a.title) || `item ${item}`;
  }

  // ---------------------------------------------------------------- the API
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.field = body && body.field;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.key) headers["X-API-Key"] = state.key;
    let res;
    try {
      res = await fetch(path, {
        method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      setConnection(false);
      throw new ApiError(0, { message: "the server is not reachable (" + (e && e.message ? e.message : e) + ")." });
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = { message: text.slice(0, 300) }; }
    }
    if (!res.ok) {
      const err = new ApiError(res.status, data);
      if (res.status === 401 || res.status === 403) askForKey();
      throw err;
    }
    setConnection(true);
    return data;
  }

  // ------------------------------------------------------------------ status
  let statusTimer = null;
  function say(msg, kind = "info") {
    const el = $("status");
    clearTimeout(statusTimer);
    el.className = "status status-" + kind + (msg ? " show" : "");
    el.textContent = msg || "";
    el.dataset.kind = kind;
    if (msg && kind !== "error") statusTimer = setTimeout(() => say(""), 6000);
  }
  function sayError(e) {
    const msg = e instanceof ApiError || (e && e.message) ? e.message : String(e);
    say(msg + (e && e.field ? ` (field: ${e.field})` : ""), "error");
  }

  function setConnection(ok, detail) {
    const pill = $("conn-pill");
    pill.classList.toggle("ok", !!ok);
    pill.classList.toggle("bad", !ok);
    if (detail) $("conn-text").textContent = detail;
    else if (!ok) $("conn-text").textContent = "offline";
    else if ($("conn-text").textContent === "offline" || $("conn-text").textContent.startsWith("connecting")) {
      $("conn-text").textContent = "connected";
    }
  }

  function askForKey() {
    const form = $("key-form");
    const wasHidden = form.hidden;
    form.hidden = false;
    if (wasHidden || !state.key) $("api-key").focus();
  }

  // ------------------------------------------------------------------- users
  function newReaderId() {
    const a = new Uint8Array(3);
    crypto.getRandomValues(a);
    return "reader-" + Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function enqueue(fn) {
    const run = state.chain.then(fn, fn);
    state.chain = run.catch(() => {});
    return run;
  }

  function setUser(raw) {
    const u = String(raw || "").trim();
    if (!u) {
      say("Type a user id (any name) or pick one of the suggestions.", "error");
      $("user-input").focus();
      return;
    }
    state.user = u;
    state.prevPos = new Map();
    state.interestsDirty = false;
    save(LS_USER, u);
    $("user-input").value = u;
    $("recs-for").textContent = "for " + u;
    for (const b of document.querySelectorAll("#user-suggest button")) {
      b.setAttribute("aria-pressed", String(b.dataset.user === u));
    }
    $("round-trip").textContent = "Press Click, Like, Skip or Buy on a book: the list re-ranks at once.";
    $("round-trip").classList.remove("measured");
    refreshUser();
    enqueue(() => loadRecs());
  }

  async function refreshUser() {
    const u = state.user;
    if (!u) return;
    let info;
    try {
      info = await api("GET", `/users/${enc(u)}`);
    } catch (e) {
      if (e.status !== 401 && e.status !== 403) sayError(e);
      return;
    }
    if (u !== state.user) return;
    renderUser(info);
  }

  function renderUser(info) {
    const box = $("user-summary");
    box.replaceChildren();
    const recent = (info.recent || []).slice(-5).reverse();
    box.append(
      h("span", { class: "chip" }, "variant ", h("b", { "data-testid": "user-variant" }, info.variant)),
      h("span", { class: "chip" }, h("b", { "data-testid": "user-events" }, fmtInt(info.events)), info.events === 1 ? " event" : " events"),
    );
    if (info.interests) box.append(h("span", { class: "chip chip-accent", title: info.interests }, "interests set"));
    if (recent.length) {
      const ul = h("ul", { class: "recent", "aria-label": "Latest events" });
      for (const e of recent) {
        const li = h("li", { class: "kind-" + e.kind }, h("span", { class: "kind" }, e.kind), " ",
          h("span", { class: "t", dataset: { item: e.item } }, titleOf(e.item)));
        ul.append(li);
      }
      box.append(ul);
      ensureItems(recent.map((e) => e.item)).then(() => {
        for (const t of box.querySelectorAll(".recent .t")) t.textContent = titleOf(t.dataset.item);
      });
    } else {
      box.append(h("span", { class: "muted small" }, "New reader: no events yet. Search for a book you like, or act on a card."));
    }
    const ta = $("interests-input");
    if (!state.interestsDirty && document.activeElement !== ta) {
      ta.value = info.interests || "";
      if (info.interests) $("interests-box").open = true;
    }
  }

  async function saveInterests(text) {
    const u = state.user;
    if (!u) return;
    const value = text && text.trim() ? text.trim() : null;
    await enqueue(async () => {
      const t0 = performance.now();
      try {
        const info = await api("PUT", `/users/${enc(u)}/interests`, { interests: value });
        const t1 = performance.now();
        state.interestsDirty = false;
        renderUser(info);
        const data = await api("GET", recsPath(u));
        const t2 = performance.now();
        if (u !== state.user) return;
        const changed = renderRecs(data);
        const t3 = performance.now();
        showRoundTrip(t3 - t0, t1 - t0, t2 - t1, t3 - t2, changed, "interests");
        say(value ? "Interests saved; the list now follows them." : "Interests cleared.", "ok");
      } catch (e) { sayError(e); }
    });
  }

  async function forgetMe() {
    const u = state.user;
    if (!u) return;
    const ok = window.confirm(
      `Erase everything liverec stores about “${u}”?\n\nEvents, served lists, interests and learned taste are deleted. This cannot be undone.`,
    );
    if (!ok) return;
    await enqueue(async () => {
      try {
        const out = await api("DELETE", `/users/${enc(u)}`);
        const d = out.deleted || {};
        const parts = Object.entries(d).filter(([, n]) => n).map(([k, n]) => `${k.replace(/_/g, " ")} ${n}`);
        say(`Erased “${u}”` + (parts.length ? `: ${parts.join(", ")}.` : ": nothing was stored."), "ok");
        state.prevPos = new Map();
        state.interestsDirty = false;
        $("interests-input").value = "";
        await loadRecs();
        refreshUser();
      } catch (e) { sayError(e); }
    });
  }

  // --------------------------------------------------------- recommendations
  const recsPath = (u) => `/recommendations/${enc(u)}?k=${K}`;

  async function loadRecs() {
    const u = state.user;
    if (!u) return;
    const list = $("recs");
    list.setAttribute("aria-busy", "true");
    try {
      const data = await api("GET", recsPath(u));
      if (u === state.user) renderRecs(data);
    } catch (e) {
      sayError(e);
    } finally {
      list.setAttribute("aria-busy", "false");
    }
  }

  /** One feedback event, then the new list: the round trip the page measures. */
  function act(item, kind, title) {
    const u = state.user;
    if (!u) {
      say("Pick a reader first.", "error");
      $("user-input").focus();
      return Promise.resolve();
    }
    return enqueue(async () => {
      const list = $("recs");
      list.setAttribute("aria-busy", "true");
      const t0 = performance.now();
      try {
        await api("POST", "/events", { user: u, item, kind });
        const t1 = performance.now();
        const data = await api("GET", recsPath(u));
        const t2 = performance.now();
        if (u !== state.user) return;
        const changed = renderRecs(data);
        const t3 = performance.now();
        showRoundTrip(t3 - t0, t1 - t0, t2 - t1, t3 - t2, changed, "event");
        say(`${PAST[kind] || kind} “${splitTitle(title || titleOf(item))[0]}”.`, "ok");
        refreshUser();
      } catch (e) {
        sayError(e);
      } finally {
        list.setAttribute("aria-busy", "false");
      }
    });
  }

  function showRoundTrip(total, tEvent, tList, tRender, changed, what) {
    const el = $("round-trip");
    el.classList.add("measured");
    el.dataset.count = String(Number(el.dataset.count || 0) + 1); // lets tests wait for the next one
    el.replaceChildren(
      h("span", { class: "rt-main", "data-testid": "round-trip-text" },
        "round trip: ", h("b", { "data-testid": "round-trip-ms" }, total.toFixed(1)), ` ms (${what} → new list)`),
      h("span", { class: "rt-parts" },
        `${what} ${fmtMs(tEvent)} · list ${fmtMs(tList)} · render ${fmtMs(tRender)}`,
        changed ? ` · ${changed} new ${changed === 1 ? "book" : "books"}` : " · same books"),
    );
  }

  /** Render the list; returns how many items were not in the previous list. */
  function renderRecs(data) {
    // Remember keyboard focus inside the list, to put it back after re-rendering.
    const active = document.activeElement;
    let focusItem = null, focusKind = null, focusPos = null;
    const list = $("recs");
    if (active && list.contains(active)) {
      const card = active.closest(".card");
      focusItem = card && card.dataset.item;
      focusPos = card && Number(card.dataset.position);
      focusKind = active.dataset.kind || null;
    }

    $("meta-variant").textContent = data.variant;
    $("meta-policy").textContent = data.policy;
    $("meta-model").textContent = "v" + data.model_version;
    $("meta-cached").textContent = data.cached ? "yes" : "no";
    $("meta-cached").parentElement.classList.toggle("chip-accent", !!data.cached);
    $("meta-took").textContent = fmtMs(data.took_ms);

    const items = data.items || [];
    let maxC = 0;
    for (const r of items) for (const x of r.reasons || []) maxC = Math.max(maxC, Math.abs(x.contribution));
    const prev = state.prevPos;
    const hadPrev = prev.size > 0;
    let changed = 0;
    const cards = items.map((r, i) => {
      const was = prev.get(r.item);
      let move = null;
      if (hadPrev && was === undefined) { move = h("span", { class: "badge badge-new", title: "new in the list" }, "new"); changed++; }
      else if (hadPrev && was > i) move = h("span", { class: "badge badge-up", title: `up ${was - i}` }, `▲${was - i}`);
      else if (hadPrev && was < i) move = h("span", { class: "badge badge-down", title: `down ${i - was}` }, `▼${i - was}`);
      return card(r, i, maxC, move, hadPrev && was === undefined);
    });
    list.replaceChildren(...cards);
    if (!items.length) {
      list.append(h("li", { class: "empty" }, "Nothing to recommend: the catalog is empty or everything was seen."));
    }
    state.prevPos = new Map(items.map((r, i) => [r.item, i]));
    list.dataset.items = items.map((r) => r.item).join(",");
    list.dataset.user = data.user;

    // Authors and year are not in the response: fill them from the item cache.
    ensureItems(items.map((r) => r.item)).then(() => {
      for (const c of list.querySelectorAll(".card")) {
        const b = c.querySelector(".byline");
        if (b && !b.textContent) b.textContent = byline(state.items.get(c.dataset.item));
      }
    });

    if (focusItem != null) {
      const esc = window.CSS && CSS.escape ? CSS.escape : (x) => x;
      let target = list.querySelector(`.card[data-item="${esc(focusItem)}"]`);
      if (!target && focusPos != null) target = list.querySelectorAll(".card")[Math.min(focusPos, items.length - 1)];
      const btn = target && (target.querySelector(`button[data-kind="${focusKind}"]`) || target.querySelector("button"));
      (btn || $("recs-heading")).focus({ preventScroll: true });
    }
    return changed;
  }

  function cover(title, url) {
    const box = h("div", { class: "cover", "aria-hidden": "true" },
      h("span", { class: "ph" }, h("span", { class: "ph-i" }, initials(title))));
    if (url && !state.badImages.has(url)) {
      // loading/referrerpolicy before src: setting src first would start an eager download.
      const img = h("img", { alt: "", loading: "lazy", decoding: "async", referrerpolicy: "no-referrer", src: url });
      img.addEventListener("load", () => box.classList.add("has-img"));
      img.addEventListener("error", () => { state.badImages.add(url); img.remove(); box.classList.remove("has-img"); });
      box.append(img);
    }
    return box;
  }

  function actions(item, title, testPrefix) {
    return h("div", { class: "actions", role: "group", "aria-label": `Feedback on ${title}` },
      KINDS.map((k) => h("button", {
        type: "button", class: `btn btn-act act-${k.kind}`, "data-kind": k.kind, "data-testid": `${testPrefix}-${k.kind}`,
        "aria-label": `${k.label}: ${title}`, title: `${k.label} (sends a “${k.kind}” event)`,
        onclick: () => act(item, k.kind, title),
      }, k.label)));
  }

  function card(r, i, maxC, move, fresh) {
    const title = r.title || titleOf(r.item);
    const [main, series] = splitTitle(title);
    const reasons = h("ul", { class: "reasons", "aria-label": "What each reason added to the score" },
      (r.reasons || []).map((x) => {
        const w = maxC > 0 ? Math.max(2, (Math.abs(x.contribution) / maxC) * 100) : 0;
        return h("li", { title: x.text },
          h("span", { class: "src" }, PLAIN[x.source] || "other"),
          h("span", { class: "bar", "aria-hidden": "true" },
            h("span", { class: `fill src-${x.source}${x.contribution < 0 ? " neg" : ""}`, style: `width:${w.toFixed(1)}%` })),
          h("span", { class: "val" }, (x.contribution >= 0 ? "+" : "") + x.contribution.toFixed(3)));
      }));
    // The reason is clamped to two lines; a tap (or Enter) shows it whole, with the item's description.
    const why = r.explanation ? h("button", {
      type: "button", class: "why", "data-testid": "rec-explanation", "aria-expanded": "false",
      title: "Show the whole reason",
      onclick: (ev) => {
        const btn = ev.currentTarget;
        const c = btn.closest(".card");
        const open = c.classList.toggle("open");
        btn.setAttribute("aria-expanded", String(open));
        const text = state.texts.get(r.item) || "";
        if (open && text.trim() && text.trim() !== title && !c.querySelector(".desc")) {
          btn.after(h("p", { class: "desc", "data-testid": "rec-description" }, text));
        }
      },
    }, r.explanation) : null;
    return h("li", {
      class: "card" + (fresh ? " fresh" : ""), "data-testid": "rec-card",
      dataset: { item: r.item, position: String(i) },
    },
      cover(title, r.image_url),
      h("div", { class: "card-body" },
        h("div", { class: "card-head" },
          h("span", { class: "rank", "aria-label": `rank ${i + 1}` }, String(i + 1)),
          h("h3", { class: "title", "data-testid": "rec-title" }, main,
            series ? h("span", { class: "series" }, ` (${series})`) : null),
          move,
          h("span", { class: "score", title: `score ${r.score.toFixed(4)}, propensity ${r.propensity.toFixed(3)}` },
            r.score.toFixed(3))),
        h("p", { class: "byline", "data-testid": "rec-byline" }, byline(state.items.get(r.item))),
        why,
        (r.reasons || []).length ? reasons : null,
        actions(r.item, main, "act")));
  }

  /** Fetch attributes of items not cached yet (a few at a time). */
  async function ensureItems(ids) {
    const missing = [...new Set(ids)].filter((id) => !state.items.has(id));
    const work = missing.map((id) => {
      if (!state.pending.has(id)) {
        state.pending.set(id, api("GET", `/items/${enc(id)}`)
          .then((it) => { state.items.set(id, it.attributes || {}); state.texts.set(id, it.text || ""); })
          .catch(() => { state.items.set(id, {}); })
          .finally(() => state.pending.delete(id)));
      }
      return state.pending.get(id);
    });
    await Promise.all(work);
  }

  // ------------------------------------------------------------------ search
  let searchTimer = null;
  let searchSeq = 0;
  async function search(q) {
    const seq = ++searchSeq;
    const ul = $("search-results");
    q = q.trim();
    if (!q) {
      ul.replaceChildren(h("li", { class: "hint muted small" },
        "Search by title or author, then Like a book: a new reader's list follows at once."));
      return;
    }
    let found;
    try {
      found = await api("GET", `/items?q=${enc(q)}&limit=8`);
    } catch (e) { sayError(e); return; }
    if (seq !== searchSeq) return;
    for (const it of found) { state.items.set(it.id, it.attributes || {}); state.texts.set(it.id, it.text || ""); }
    if (!found.length) {
      ul.replaceChildren(h("li", { class: "hint muted small" }, `No book matches “${q}”.`));
      return;
    }
    ul.replaceChildren(...found.map((it) => {
      const a = it.attributes || {};
      const title = a.title || it.text.split("\n")[0] || it.id;
      const [main, series] = splitTitle(title);
      return h("li", { class: "result", "data-testid": "search-result", dataset: { item: it.id } },
        h("div", { class: "result-text" },
          h("span", { class: "result-title" }, main, series ? h("span", { class: "series" }, ` (${series})`) : null),
          h("span", { class: "byline" }, byline(a))),
        actions(it.id, main, "search"));
    }));
  }

  // ------------------------------------------------------------------- stats
  async function pollStats() {
    if (state.statsBusy) return; // the request in flight schedules the next one
    state.statsBusy = true;
    clearTimeout(state.statsTimer);
    try {
      if (!document.hidden) {
        const st = await api("GET", "/stats");
        state.lastStats = st;
        renderStats(st);
      }
    } catch (e) {
      if (e.status === 0) setConnection(false);
    } finally {
      state.statsBusy = false;
      state.statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
    }
  }

  function colorOf(variant) {
    if (!state.varColors.has(variant)) {
      state.varColors.set(variant, VARIANT_COLORS[state.varColors.size % VARIANT_COLORS.length]);
    }
    return state.varColors.get(variant);
  }

  function renderStats(st) {
    const series = st.series || [];
    const bs = st.bucket_seconds || 5;
    const last = series.length ? series[series.length - 1] : null;
    const empty = st.model_version == null; // the placeholder drawn before the first answer
    $("kpi-events").textContent = fmtInt(st.events_total);
    $("kpi-items").textContent = fmtInt(st.items);
    $("kpi-model").textContent = empty ? "–" : "v" + st.model_version;
    const nowBucket = Math.floor(Date.now() / 1000 / bs) * bs;
    // Use the browser clock unless it disagrees with the server's by more than a minute.
    let end = nowBucket;
    if (last && Math.abs(last.t - nowBucket) > 60) end = last.t;
    const start = end - (WINDOW_BUCKETS - 1) * bs;
    const byT = new Map(series.map((b) => [b.t, b]));
    const xs = [];
    for (let t = start; t <= end; t += bs) xs.push(t);
    const cur = byT.get(end);
    $("kpi-rps").textContent = empty ? "–" : fmtRate(cur ? cur.requests_per_s : 0);
    const imp = st.importing; // [done, total] while the catalog is still being encoded
    if (!empty) setConnection(true, imp ? `learning the catalog… ${fmtInt(imp[0])}/${fmtInt(imp[1])}` : `connected · ${fmtInt(st.items)} items`);
    // An empty list shown while the catalog was empty or still being imported fills itself
    // as books arrive (asked again only when the catalog has grown since).
    if (st.items > 0 && st.items !== state.itemsAsked && state.user && !$("recs").dataset.items) {
      state.itemsAsked = st.items;
      enqueue(() => loadRecs());
    }

    for (const v of st.variants || []) colorOf(v.name);
    const at = (t, f) => { const b = byT.get(t); return b ? f(b) : null; };

    drawChart($("chart-events"), {
      xs, bs, yFormat: fmtRate, minTop: 1, zeroIsEmpty: true,
      series: [
        { name: "events/s", color: "#2563eb", area: true, values: xs.map((t) => at(t, (b) => b.events_per_s) ?? 0) },
        { name: "requests/s", color: "#94a3b8", dash: "4 3", values: xs.map((t) => at(t, (b) => b.requests_per_s) ?? 0) },
      ],
    });

    const names = new Set((st.variants || []).map((v) => v.name));
    for (const b of series) for (const n of Object.keys(b.ctr || {})) names.add(n);
    drawChart($("chart-ctr"), {
      xs, bs, yFormat: (v) => fmtPct(v, 0), minTop: 0.1, maxTop: 1, dots: true,
      series: [...names].map((n) => ({
        name: n, color: colorOf(n),
        values: xs.map((t) => at(t, (b) => (b.ctr && b.ctr[n] != null ? b.ctr[n] : null))),
      })),
    });

    drawChart($("chart-latency"), {
      xs, bs, yFormat: (v) => (v >= 10 || v === 0 ? Math.round(v) : v.toFixed(1)) + " ms", minTop: 5, dots: true,
      series: [
        { name: "p50", color: "#2563eb", values: xs.map((t) => at(t, (b) => b.latency_p50_ms)) },
        { name: "p99", color: "#ea580c", values: xs.map((t) => at(t, (b) => b.latency_p99_ms)) },
      ],
    });

    renderVariants(st.variants || [], empty);
    if (!empty) $("stats-updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB", { hour12: false });
  }

  function renderVariants(vs, empty) {
    const body = $("variants-body");
    const top = Math.max(0.05, ...vs.map((v) => (v.served ? v.ctr_ci95[1] : 0)));
    const scale = niceCeil(Math.min(1, top));
    body.replaceChildren(...vs.map((v) => {
      const [lo, hi] = v.ctr_ci95 || [0, 1];
      const ci = v.served
        ? h("span", { class: "ci", "aria-hidden": "true", title: `95% CI ${fmtPct(lo)} – ${fmtPct(hi)}` },
          h("span", { class: "ci-range", style: `left:${(lo / scale) * 100}%;width:${Math.max(1, ((hi - lo) / scale) * 100)}%;background:${colorOf(v.name)}` }),
          h("span", { class: "ci-point", style: `left:${((v.ctr || 0) / scale) * 100}%;background:${colorOf(v.name)}` }))
        : null;
      return h("tr", { "data-testid": "variant-row", dataset: { variant: v.name } },
        h("th", { scope: "row" },
          h("span", { class: "swatch", style: `background:${colorOf(v.name)}`, "aria-hidden": "true" }), v.name,
          h("span", { class: "sub" }, `${v.policy} · ${fmtPct(v.share, 0)} of readers`)),
        h("td", { class: "num", "data-testid": "variant-served" }, fmtInt(v.served)),
        h("td", { class: "num", "data-testid": "variant-clicked" }, fmtInt(v.clicked)),
        h("td", { class: "ctr-cell" },
          h("span", { class: "ctr-line" }, h("span", { class: "ctr-val", "data-testid": "variant-ctr" }, fmtPct(v.ctr)), ci),
          h("span", { class: "ci-text" }, v.served ? `95% CI ${fmtPct(lo)} – ${fmtPct(hi)}` : "no data yet")));
    }));
    if (!vs.length) body.append(h("tr", {}, h("td", { colspan: "4", class: "muted" }, empty ? "waiting for the server…" : "no variants")));
  }

  // ------------------------------------------------------------------ charts
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    const f = v / e;
    const n = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return n * e;
  }

  /** A small line chart in an <svg>: shared x (bucket starts), gaps where a value is null. */
  function drawChart(svg, cfg) {
    const W = Math.max(220, Math.round(svg.getBoundingClientRect().width || 360));
    const H = 120;
    const m = { l: 44, r: 10, t: 8, b: 20 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("height", H);
    const { xs, bs } = cfg;
    const t0 = xs[0], t1 = xs[xs.length - 1] + bs;
    let top = cfg.minTop || 1;
    for (const ser of cfg.series) for (const v of ser.values) if (v != null && isFinite(v)) top = Math.max(top, v);
    top = niceCeil(top);
    if (cfg.maxTop) top = Math.min(top, cfg.maxTop);
    const X = (t) => m.l + ((t + bs - t0) / (t1 - t0)) * iw; // plot a bucket at its end
    const Y = (v) => m.t + ih - (Math.min(v, top) / top) * ih;

    const kids = [];
    const ticks = 4;
    for (let i = 0; i <= ticks; i++) {
      const v = (top * i) / ticks;
      const y = Y(v);
      kids.push(s("line", { x1: m.l, x2: W - m.r, y1: y, y2: y, class: i === 0 ? "axis" : "grid" }));
      if (i % 2 === 0) kids.push(s("text", { x: m.l - 6, y: y + 3.5, class: "tick", "text-anchor": "end" }, cfg.yFormat(v)));
    }
    const span = t1 - t0;
    for (const frac of [0, 0.5, 1]) {
      const secs = Math.round(span * (1 - frac));
      const label = secs === 0 ? "now" : secs >= 120 ? `−${(secs / 60).toFixed(secs % 60 ? 1 : 0)} min` : `−${secs} s`;
      kids.push(s("text", {
        x: m.l + frac * iw, y: H - 5, class: "tick",
        "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle",
      }, label));
    }

    const any = cfg.series.some((ser) => ser.values.some((v) => v != null && isFinite(v) && (v > 0 || !cfg.zeroIsEmpty)));
    for (const ser of cfg.series) {
      const segs = [];
      let seg = [];
      ser.values.forEach((v, i) => {
        if (v == null || !isFinite(v)) { if (seg.length) segs.push(seg); seg = []; return; }
        seg.push([X(xs[i]), Y(v)]);
      });
      if (seg.length) segs.push(seg);
      for (const pts of segs) {
        const d = pts.map((p, j) => (j ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1)).join("");
        if (ser.area && pts.length > 1) {
          kids.push(s("path", {
            d: d + `L${pts[pts.length - 1][0].toFixed(1)} ${Y(0)}L${pts[0][0].toFixed(1)} ${Y(0)}Z`,
            fill: ser.color, class: "area",
          }));
        }
        if (pts.length > 1) {
          kids.push(s("path", { d, stroke: ser.color, class: "line", "stroke-dasharray": ser.dash || null }));
        }
        if (cfg.dots || pts.length === 1) {
          for (const p of pts) kids.push(s("circle", { cx: p[0].toFixed(1), cy: p[1].toFixed(1), r: 2.6, fill: ser.color, class: "dot" }));
        }
      }
    }
    if (!any) {
      kids.push(s("text", { x: m.l + iw / 2, y: m.t + ih / 2, class: "empty-note", "text-anchor": "middle" }, "waiting for traffic…"));
    }
    svg.replaceChildren(...kids);

    // Legend (HTML, after the svg): name, colour and latest value.
    const fig = svg.parentElement;
    let legend = fig.querySelector(".legend");
    if (!legend) { legend = h("div", { class: "legend" }); fig.append(legend); }
    legend.replaceChildren(...cfg.series.map((ser) => {
      let lastV = null;
      for (let i = ser.values.length - 1; i >= 0; i--) if (ser.values[i] != null) { lastV = ser.values[i]; break; }
      return h("span", { class: "key" },
        h("span", { class: "sw" + (ser.dash ? " dashed" : ""), style: `--c:${ser.color}`, "aria-hidden": "true" }),
        ser.name, " ", h("b", {}, lastV == null ? "–" : cfg.yFormat(lastV)));
    }));
  }

  // -------------------------------------------------------------------- init
  function wire() {
    const sug = $("user-suggest");
    for (const name of SUGGESTED) {
      sug.append(h("button", {
        type: "button", class: "btn btn-chip", dataset: { user: name }, "data-testid": "user-suggestion",
        "aria-pressed": "false", onclick: () => setUser(name),
      }, name));
    }
    $("user-form").addEventListener("submit", (e) => { e.preventDefault(); setUser($("user-input").value); });
    $("user-new").addEventListener("click", () => {
      setUser(newReaderId());
      say(`New reader “${state.user}”: search a book below and Like it to seed the list.`, "info");
      $("search-input").focus();
    });
    $("interests-input").addEventListener("input", () => { state.interestsDirty = true; });
    $("interests-form").addEventListener("submit", (e) => { e.preventDefault(); saveInterests($("interests-input").value); });
    $("interests-clear").addEventListener("click", () => { $("interests-input").value = ""; saveInterests(""); });
    $("forget-me").addEventListener("click", forgetMe);
    $("recs-refresh").addEventListener("click", () => enqueue(() => loadRecs()));
    $("search-form").addEventListener("submit", (e) => {
      e.preventDefault();
      clearTimeout(searchTimer);
      search($("search-input").value);
    });
    $("search-input").addEventListener("input", () => {
      clearTimeout(searchTimer);
      const q = $("search-input").value;
      searchTimer = setTimeout(() => search(q), q.trim().length >= 2 || !q.trim() ? 250 : 600);
    });
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const k = $("api-key").value.trim();
      state.key = k || null;
      save(LS_KEY, state.key);
      say(k ? "API key saved in this browser." : "API key removed.", "ok");
      if (state.user) { refreshUser(); enqueue(() => loadRecs()); } else start();
    });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => renderStats(state.lastStats || EMPTY_STATS), 120);
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) pollStats(); });
  }

  async function start() {
    let ready;
    try {
      ready = await api("GET", "/ready");
    } catch (e) {
      if (e.status === 503) {
        say("The server is starting or its store is not reachable; retrying…", "error");
      } else {
        sayError(e);
      }
      setTimeout(start, 2000);
      return;
    }
    state.open = !!ready.open_access;
    $("open-pill").hidden = !state.open;
    $("key-form").hidden = state.open;
    if (state.key) $("api-key").value = state.key;
    setConnection(true, `connected · ${fmtInt(ready.items)} items`);
    if (!state.open && !state.key) {
      say("This server needs an API key (role read, or write to send events). Paste it above.", "error");
      $("api-key").focus();
      return;
    }
    search("");
    setUser(load(LS_USER) || newReaderId());
    pollStats();
  }

  const EMPTY_STATS = { events_total: null, items: null, model_version: null, bucket_seconds: 5, series: [], variants: [] };

  wire();
  renderStats(EMPTY_STATS);
  start();
})();
