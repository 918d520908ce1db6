// bottle console: the live part of the page. Served by `bottle console`, embedded in the
// binary. It follows /events (server-sent events): `state` replaces the server-rendered
// projects' bottles, queue and grants (escaped by the server's template engine), keeping
// what is typed in the forms across updates; `audit` adds one decision to the audit
// table, built with textContent only, so agent-written text stays text. Filters by
// project, bottle and verdict hide rows.
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const state = document.getElementById("state");
  const rows = document.getElementById("audit-rows");
  const fProject = document.getElementById("f-project");
  const fBottle = document.getElementById("f-bottle");
  const fVerdict = document.getElementById("f-verdict");
  const live = document.getElementById("live");
  const MAX_ROWS = 1000;
  const options = { project: new Set(), bottle: new Set() };

  // A text input of a decision form: its form, project, proposal and name.
  function inputKey(input) {
    const f = input.form;
    const v = function (name) { const i = f.querySelector("input[name=" + name + "]"); return i ? i.value : ""; };
    return [f.action, v("project"), v("id"), input.name].join("|");
  }

  // Replace the live part, keeping what the operator is typing.
  function swapState(html) {
    const kept = {};
    let focused = null;
    for (const input of state.querySelectorAll("form input[type=text]")) {
      const key = inputKey(input);
      kept[key] = input.value;
      if (input === document.activeElement) focused = key;
    }
    const doc = new DOMParser().parseFromString("<div>" + html + "</div>", "text/html");
    state.replaceChildren(...doc.body.firstChild.childNodes);
    for (const input of state.querySelectorAll("form input[type=text]")) {
      const key = inputKey(input);
      if (key in kept) input.value = kept[key];
      if (key === focused) input.focus();
    }
  }

  function shown(tr) {
    return (!fProject.value || tr.dataset.project === fProject.value) &&
      (!fBottle.value || tr.dataset.bottle === fBottle.value) &&
      (!fVerdict.value || tr.dataset.verdict === fVerdict.value);
  }

  function applyFilters() {
    for (const tr of rows.children) tr.hidden = !shown(tr);
  }

  // A filter's choice for a value not seen before.
  function addOption(select, seen, value) {
    if (!value || seen.has(value)) return;
    seen.add(value);
    const o = document.createElement("option");
    o.value = value;
    o.textContent = value;
    select.appendChild(o);
  }

  function addAudit(d) {
    const tr = document.createElement("tr");
    tr.dataset.ts = String(d.ts);
    tr.dataset.project = d.project || "";
    tr.dataset.bottle = d.bottle || "";
    tr.dataset.verdict = d.verdict || "";
    tr.className = "verdict-" + (d.verdict || "");
    const time = new Date(d.ts * 1000).toISOString().replace("T", " ").slice(0, 23);
    for (const text of [time, d.project, d.bottle, d.source, d.verdict, d.reason, d.host, d.detail || ""]) {
      const td = document.createElement("td");
      td.textContent = text == null ? "" : String(text);
      tr.appendChild(td);
    }
    // Newest first.
    let before = rows.firstChild;
    while (before && Number(before.dataset.ts) > d.ts) before = before.nextSibling;
    rows.insertBefore(tr, before);
    while (rows.children.length > MAX_ROWS) rows.removeChild(rows.lastChild);
    addOption(fProject, options.project, d.project);
    addOption(fBottle, options.bottle, d.bottle);
    tr.hidden = !shown(tr);
  }

  fProject.addEventListener("change", applyFilters);
  fBottle.addEventListener("change", applyFilters);
  fVerdict.addEventListener("change", applyFilters);

  const es = new EventSource("/events?token=" + encodeURIComponent(token));
  es.addEventListener("open", function () { live.textContent = "live"; live.className = "live on"; });
  es.addEventListener("error", function () { live.textContent = "reconnecting…"; live.className = "live off"; });
  es.addEventListener("state", function (e) { swapState(e.data); });
  es.addEventListener("audit", function (e) {
    try { addAudit(JSON.parse(e.data)); } catch (_) { /* not a decision */ }
  });
})();
