// finealign annotate: the page's script. Plain JavaScript, no build step, no dependencies.
// Data from the server is only ever written as text (textContent, textarea.value), never as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    token: null, me: null, item: null, annotation: null, worse: "rejected", flag: null,
    activeMs: 0, visibleSince: null, seq: 0, diffTimer: null, diff: null, confirmLarge: false,
    back: [], busy: false,
  };

  // ------------------------------------------------------------------ API

  async function api(method, path, body) {
    const headers = { "Authorization": "Bearer " + state.token };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                                    cache: "no-store", credentials: "omit" });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) {
      const detail = data && data.detail !== undefined ? data.detail : res.statusText;
      const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function status(msg, isError) {
    const el = $("status");
    el.textContent = msg || "";
    el.classList.toggle("error", !!isError);
  }

  // ------------------------------------------------------------------ rendering (text nodes only)

  // Fill `el` with `text`, wrapping each [start, end) range of `ranges` in <mark class=cls>.
  function renderMarked(el, text, ranges, cls) {
    const nodes = [];
    let pos = 0;
    for (const [s, e] of ranges || []) {
      if (s < pos || e <= s) continue;
      if (s > pos) nodes.push(document.createTextNode(text.slice(pos, s)));
      const m = document.createElement("mark");
      m.className = cls;
      m.textContent = text.slice(s, e);
      nodes.push(m);
      pos = e;
    }
    nodes.push(document.createTextNode(text.slice(pos)));
    el.replaceChildren(...nodes);
  }

  // Python str indices count code points; JavaScript strings count UTF-16 units. Convert.
  function toUnits(text, ranges) {
    if (!ranges || !ranges.length || !/[\uD800-\uDFFF]/.test(text)) return ranges || [];
    const map = [0];
    let u = 0;
    for (const ch of text) { u += ch.length; map.push(u); }
    return ranges.map(([s, e]) => [map[Math.min(s, map.length - 1)], map[Math.min(e, map.length - 1)]]);
  }

  function renderPrompt(prompt) {
    const el = $("prompt");
    if (typeof prompt === "string") { el.textContent = prompt; return; }
    const blocks = (prompt || []).map((m) => {
      const d = document.createElement("div");
      d.className = "msg";
      const r = document.createElement("span");
      r.className = "role";
      r.textContent = String(m.role);
      d.append(r, document.createTextNode(String(m.content)));
      return d;
    });
    el.replaceChildren(...blocks);
  }

  function originalText() {
    const it = state.item;
    if (!it) return "";
    if (it.mode === "review") return it.original;
    return state.worse === "chosen" ? it.chosen : it.rejected;
  }

  function startText() {
    const it = state.item;
    return it.mode === "review" ? it.llm_edit : originalText();
  }

  function renderEditorBackdrop(ranges, cls) {
    const text = $("editor").value;
    renderMarked($("backdrop"), text, ranges || [], cls || "ins");
    if (text.endsWith("\n")) $("backdrop").append(document.createTextNode(" "));
    autoGrow();
  }

  function autoGrow() {
    const ta = $("editor");
    ta.style.height = "auto";
    ta.style.height = (ta.scrollHeight + 2) + "px";
  }

  function renderMeter(d) {
    const meter = $("meter-text").parentElement;
    const fill = $("meter-fill");
    meter.classList.remove("warn", "over");
    if (!d) { fill.style.width = "0"; $("meter-text").textContent = ""; return; }
    const r = d.edit_ratio, lim = d.max_ratio;
    fill.style.width = Math.min(100, (r / (2 * lim)) * 100) + "%";
    let msg;
    if (d.status === "unchanged") msg = "nothing changed yet";
    else if (d.status === "too_large") { meter.classList.add("over"); msg = `edit ratio ${r.toFixed(2)} > ${lim.toFixed(2)}: not minimal, make a smaller edit`; }
    else { if (r > 0.75 * lim) meter.classList.add("warn"); msg = `edit ratio ${r.toFixed(2)} (limit ${lim.toFixed(2)}): minimal`; }
    if (d.tokens) msg += ` · tokens labelled: ${d.tokens.original.changed} of ${d.tokens.original.tokens} in the original, ${d.tokens.edited.changed} of ${d.tokens.edited.tokens} in the edit`;
    $("meter-text").textContent = msg;
  }

  function renderDiff(d) {
    state.diff = d;
    const orig = originalText(), edited = $("editor").value;
    const useTok = !!d.tokens;
    const oRanges = useTok ? d.tokens.original.ranges : d.original_spans;
    const eRanges = useTok ? d.tokens.edited.ranges : d.edited_spans;
    renderMarked($("original"), orig, toUnits(orig, oRanges), useTok ? "del tok" : "del");
    renderEditorBackdrop(toUnits(edited, eRanges), useTok ? "ins tok" : "ins");
    renderMeter(d);
  }

  function renderProgress(p) {
    if (!p) return;
    let s = `${p.done} done`;
    if (p.remaining !== undefined) s += ` · ${p.remaining} left for you`;
    s += ` · ${p.complete}/${p.items} items complete`;
    $("progress").textContent = s;
  }

  function renderFlag() {
    $("flag-chip").hidden = !state.flag;
    $("flag-text").textContent = state.flag ? "flagged: " + state.flag : "";
  }

  // ------------------------------------------------------------------ time on the item

  function timerStart() {
    state.activeMs = 0;
    state.visibleSince = document.hidden ? null : performance.now();
  }
  function elapsedSeconds() {
    let ms = state.activeMs;
    if (state.visibleSince !== null) ms += performance.now() - state.visibleSince;
    return ms / 1000;
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && state.visibleSince !== null) { state.activeMs += performance.now() - state.visibleSince; state.visibleSince = null; }
    else if (!document.hidden && state.visibleSince === null) state.visibleSince = performance.now();
  });
  setInterval(() => {
    if (!state.item) { $("timer").textContent = ""; return; }
    const s = Math.floor(elapsedSeconds());
    $("timer").textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")} on this item`;
  }, 500);

  // ------------------------------------------------------------------ items

  function show(section) {
    for (const id of ["login", "done", "work"]) $(id).hidden = id !== section;
  }

  function loadItem(data) {
    renderProgress(data.progress);
    state.item = data.item;
    state.annotation = data.annotation;
    state.diff = null;
    state.confirmLarge = false;
    if (!state.item) { show("done"); $("mode").hidden = true; return; }
    const it = state.item, ann = state.annotation;
    const review = it.mode === "review";
    state.worse = (!review && ann && ann.worse) || "rejected";
    state.flag = (ann && ann.flag) || null;
    $("reason").value = state.flag || "";
    $("mode").hidden = false;
    $("mode").textContent = review ? "review mode" : "edit mode";
    $("key").textContent = it.key;
    $("revisit").hidden = !ann;
    renderPrompt(it.prompt);
    for (const id of ["better-panel", "flip"]) $(id).hidden = review;
    for (const id of ["accept", "reject"]) $(id).hidden = !review;
    $("submit").firstChild.textContent = review ? "Submit correction " : "Submit edit ";
    $("editor-title").textContent = review ? "The LLM's edit: accept it, correct it here, or reject it" : "Your minimal edit of the worse response";
    $("original-title").textContent = review ? "Original response" : "Worse response, as it was";
    renderSides();
    let text = startText();
    if (ann && ann.edited !== null && ann.edited !== undefined) text = ann.edited;
    $("editor").value = text;
    renderFlag();
    show("work");
    timerStart();
    refreshDiff(true);
    $("editor").focus();
  }

  function renderSides() {
    const it = state.item;
    if (it.mode === "edit") {
      const better = state.worse === "chosen" ? "rejected" : "chosen";
      $("better").textContent = it[better];
      $("better-label").textContent = `(the "${better}" response of the pair)`;
    }
    $("original").textContent = originalText();
    $("legend").textContent = (state.me && state.me.tokens)
      ? "Marked: the tokens that get a label (changed) when the token-level reward model trains on this edit."
      : "Marked: the words the alignment marks as changed; the reward model's tokens that overlap them get a label.";
  }

  async function nextItem() {
    loadItem(await api("GET", "/api/next"));
  }

  function refreshDiff(now) {
    clearTimeout(state.diffTimer);
    renderEditorBackdrop([], "ins");
    state.diffTimer = setTimeout(requestDiff, now ? 0 : 150);
  }

  async function requestDiff() {
    const it = state.item;
    if (!it) return;
    const seq = ++state.seq;
    const body = { item_id: it.id, edited: $("editor").value };
    if (it.mode === "edit") body.worse = state.worse;
    try {
      const d = await api("POST", "/api/diff", body);
      if (seq === state.seq && state.item === it) renderDiff(d);
    } catch (e) {
      if (seq === state.seq) status("diff: " + e.message, true);
    }
  }

  // ------------------------------------------------------------------ actions

  async function send(payload, okMsg) {
    if (state.busy || !state.item) return;
    state.busy = true;
    const id = state.item.id;
    try {
      payload.item_id = id;
      payload.seconds = Math.round(elapsedSeconds() * 10) / 10;
      if (state.flag) payload.flag = state.flag;
      try {
        await api("POST", "/api/submit", payload);
      } catch (e) {
        // 409: a skip would replace an answer already submitted for this item (another tab, or earlier).
        // Never silently: ask, and without a yes show the submitted answer instead.
        if (e.status !== 409) throw e;
        if (!window.confirm(e.message + "\n\nSkip anyway and withdraw that answer? (It stays in the history.)")) {
          loadItem(await api("GET", "/api/items/" + encodeURIComponent(id)));
          status("Kept your submitted answer for this item.");
          return;
        }
        payload.confirm = true;
        await api("POST", "/api/submit", payload);
      }
      state.back.push(id);
      status(okMsg);
      await nextItem();
    } catch (e) {
      status(e.message, true);
    } finally {
      state.busy = false;
    }
  }

  async function submitEdit() {
    const it = state.item;
    if (!it) return;
    clearTimeout(state.diffTimer);
    await requestDiff();
    const d = state.diff;
    const text = $("editor").value;
    if (it.mode === "review") {
      if (text === it.llm_edit) return send({ action: "submit", decision: "accept" }, "accepted");
      if (d && d.status === "unchanged") return status("Your correction equals the original: reject the LLM edit instead (Alt+R).", true);
    } else if (d && d.status === "unchanged") {
      return status("Nothing changed: edit the worse response, or skip the item (Alt+S).", true);
    }
    if (d && d.status === "too_large" && !state.confirmLarge) {
      state.confirmLarge = true;
      return status(`This edit changes ${(d.edit_ratio * 100).toFixed(0)}% of the words, more than the minimality limit. Press submit again to submit it anyway.`, true);
    }
    const payload = { action: "submit", edited: text };
    if (it.mode === "review") payload.decision = "correct"; else payload.worse = state.worse;
    return send(payload, "submitted");
  }

  function flip() {
    if (!state.item || state.item.mode !== "edit") return;
    state.worse = state.worse === "rejected" ? "chosen" : "rejected";
    renderSides();
    $("editor").value = originalText();
    status(`Flipped: now editing the "${state.worse}" response.`);
    refreshDiff(true);
  }

  function reset() {
    if (!state.item) return;
    $("editor").value = startText();
    refreshDiff(true);
  }

  function toggleFlag() {
    if (!state.item) return;
    const reason = $("reason").value.trim();
    if (!reason) { $("reason").focus(); return status("Type a reason, then flag (Alt+F).", true); }
    state.flag = reason;
    renderFlag();
    status("Flagged. Submit or skip the item to record the flag.");
  }

  async function goBack() {
    let id = state.back.pop();
    if (id === undefined) {
      try {
        const h = (await api("GET", "/api/history?limit=20")).history;
        const prev = h.find((r) => !state.item || r.item_id !== state.item.id);
        id = prev ? prev.item_id : undefined;
      } catch (e) { return status(e.message, true); }
    }
    if (id === undefined) return status("No earlier item.", true);
    try { loadItem(await api("GET", "/api/items/" + encodeURIComponent(id))); status("Revisiting an earlier item."); }
    catch (e) { status(e.message, true); }
  }

  // ------------------------------------------------------------------ wiring

  function wire() {
    $("editor").addEventListener("input", () => { state.confirmLarge = false; refreshDiff(false); });
    $("submit").addEventListener("click", submitEdit);
    $("accept").addEventListener("click", () => send({ action: "submit", decision: "accept" }, "accepted"));
    $("reject").addEventListener("click", () => send({ action: "submit", decision: "reject" }, "rejected"));
    $("skip").addEventListener("click", () => send({ action: "skip" }, state.flag ? "flagged and skipped" : "skipped"));
    $("flag").addEventListener("click", toggleFlag);
    $("unflag").addEventListener("click", () => { state.flag = null; $("reason").value = ""; renderFlag(); });
    $("flip").addEventListener("click", flip);
    $("reset").addEventListener("click", reset);
    $("back").addEventListener("click", goBack);
    $("done-back").addEventListener("click", goBack);
    $("help-btn").addEventListener("click", () => $("help").showModal());
    $("help-close").addEventListener("click", () => $("help").close());
    $("login-form").addEventListener("submit", (e) => { e.preventDefault(); login($("token-input").value.trim()); });
    window.addEventListener("resize", autoGrow);
    document.addEventListener("keydown", (e) => {
      if (!state.item && !(e.altKey && e.code === "KeyB")) return;
      if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); submitEdit(); return; }
      if (e.altKey && !e.ctrlKey && !e.metaKey) {
        const review = state.item && state.item.mode === "review";
        const actions = {
          KeyS: () => send({ action: "skip" }, state.flag ? "flagged and skipped" : "skipped"),
          KeyF: toggleFlag, KeyZ: reset, KeyB: goBack,
          KeyW: () => { if (!review) flip(); },
          KeyA: () => { if (review) send({ action: "submit", decision: "accept" }, "accepted"); },
          KeyR: () => { if (review) send({ action: "submit", decision: "reject" }, "rejected"); },
        };
        if (actions[e.code]) { e.preventDefault(); actions[e.code](); }
        return;
      }
      const inField = e.target instanceof HTMLTextAreaElement || e.target instanceof HTMLInputElement;
      if (e.key === "?" && !inField) { e.preventDefault(); $("help").showModal(); }
    });
  }

  async function login(token) {
    if (!token) { show("login"); return; }
    state.token = token;
    try {
      state.me = await api("GET", "/api/me");
    } catch (e) {
      sessionStorage.removeItem("finealign-token");
      show("login");
      return status(e.status === 401 ? "Unknown token." : e.message, true);
    }
    sessionStorage.setItem("finealign-token", token);
    $("who").textContent = state.me.name;
    status("");
    try { await nextItem(); } catch (e) { status(e.message, true); }
  }

  function start() {
    wire();
    const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    let token = m ? decodeURIComponent(m[1]) : sessionStorage.getItem("finealign-token");
    if (m) history.replaceState(null, "", location.pathname + location.search);  // keep the token out of the address bar
    login(token);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
