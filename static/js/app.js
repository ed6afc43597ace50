// Countersign's small client: live countdowns, and keyboard work on the queue.
// Everything else is server-rendered HTML swapped by htmx.
(function () {
  "use strict";

  // --- countdowns: tick every second without a round trip -----------------------
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function describe(seconds) {
    var s = Math.abs(Math.round(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    var text = h ? h + "h " + pad(m) + "m" : m ? m + "m " + pad(r) + "s" : r + "s";
    return seconds < 0 ? "overdue by " + text : text + " left";
  }

  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time.countdown[data-due]").forEach(function (el) {
      var left = Number(el.dataset.due) - now;
      var total = Number(el.dataset.total) || 1;
      el.textContent = describe(left);
      el.classList.toggle("overdue", left < 0);
      el.classList.toggle("soon", left >= 0 && left < 0.2 * total);
    });
  }

  // --- keyboard: j/k move, Enter opens, a approves, d denies ------------------------
  var selectedId = null;

  function rows() { return Array.prototype.slice.call(document.querySelectorAll(".queue .row")); }

  function select(row) {
    rows().forEach(function (r) { r.classList.remove("selected"); r.removeAttribute("aria-current"); });
    if (!row) { selectedId = null; return; }
    row.classList.add("selected");
    row.setAttribute("aria-current", "true");
    selectedId = row.dataset.id;
    var link = row.querySelector("a");
    if (link) { link.focus({ preventScroll: false }); }
  }

  function current() {
    return rows().filter(function (r) { return r.dataset.id === selectedId; })[0] || null;
  }

  function move(step) {
    var all = rows();
    if (!all.length) { return; }
    var index = all.indexOf(current());
    var next = index < 0 ? 0 : Math.min(all.length - 1, Math.max(0, index + step));
    select(all[next]);
  }

  function decideRow(row, outcome) {
    if (!row || !row.dataset.decide) { return; }
    var reason = "";
    if (outcome === "deny") {
      reason = window.prompt("Reason for denying \u201c" + row.querySelector(".title").textContent + "\u201d:");
      if (reason === null) { return; }
      if (!reason.trim()) { window.alert("A reason is required to deny."); return; }
    }
    htmx.ajax("POST", row.dataset.decide, {
      values: { outcome: outcome, reason: reason, from: "inbox" },
      swap: "none",
    }).then(refreshRows);
  }

  function refreshRows() {
    var box = document.getElementById("rows");
    if (box) { htmx.ajax("GET", box.getAttribute("hx-get"), { target: "#rows", swap: "innerHTML" }); }
  }

  function typing(event) {
    var t = event.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  document.addEventListener("keydown", function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey || typing(event)) { return; }
    var onRequestPage = document.getElementById("decide-form");
    if (event.key === "j") { move(1); event.preventDefault(); }
    else if (event.key === "k") { move(-1); event.preventDefault(); }
    else if (event.key === "Enter" && current() && !onRequestPage) {
      window.location.href = current().dataset.href; event.preventDefault();
    }
    else if (event.key === "a") {
      if (onRequestPage) { document.getElementById("approve").click(); }
      else { decideRow(current(), "approve"); }
      event.preventDefault();
    }
    else if (event.key === "d") {
      if (onRequestPage) {
        var reason = document.getElementById("reason");
        if (reason.value.trim()) { document.getElementById("deny").click(); }
        else { reason.focus(); reason.placeholder = "Why deny? Then press Deny."; }
      } else { decideRow(current(), "deny"); }
      event.preventDefault();
    }
  });

  // After htmx swaps the list, keep the reviewer's place: the same row selected,
  // and focus back on it if it was in the list (scroll position is untouched).
  var focusWasInList = false;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var box = document.getElementById("rows");
    focusWasInList = !!(box && box.contains(document.activeElement) && event.detail.target === box);
  });
  document.addEventListener("htmx:afterSwap", function () {
    var row = selectedId && current();
    if (row) {
      row.classList.add("selected");
      row.setAttribute("aria-current", "true");
      if (focusWasInList) {
        var link = row.querySelector("a");
        if (link) { link.focus({ preventScroll: true }); }
      }
    }
    focusWasInList = false;
    tick();
  });
  document.addEventListener("click", function (event) {
    var row = event.target.closest && event.target.closest(".queue .row");
    if (row) { selectedId = row.dataset.id; }
  });

  document.addEventListener("DOMContentLoaded", tick);
  setInterval(tick, 1000);
})();
