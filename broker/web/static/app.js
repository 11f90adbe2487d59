// Hopper dashboard: confirmation before actions, selections of rows, and live updates of the
// page's main part.
"use strict";

// The rows' checkboxes that belong to a form (by their form="..." attribute).
function selected(form) {
  return form.id ? document.querySelectorAll(`input[name=jid][form="${form.id}"]:checked`) : [];
}

// A button's or its form's data-confirm, with {n} the number of rows selected for that form.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const text = (event.submitter && event.submitter.dataset.confirm) || form.dataset.confirm;
  if (text && !window.confirm(text.replace("{n}", selected(form).length))) event.preventDefault();
});

// A selection: "select the page" ticks every row; the selection's buttons work while some are.
document.addEventListener("change", (event) => {
  const box = event.target;
  if (box.matches("input.select-page")) {
    const table = box.closest("table");
    table.querySelectorAll("input[type=checkbox][name=jid]").forEach((row) => { row.checked = box.checked; });
  }
  document.querySelectorAll("form#selection").forEach((form) => {
    const count = selected(form).length;
    form.querySelectorAll("button").forEach((button) => { button.disabled = count === 0; });
    form.querySelectorAll(".selected-count").forEach((shown) => { shown.textContent = count; });
  });
});

// Every data-live seconds, fetch this page's main part again (X-Partial) and put it in place,
// unless the reader is typing in it, has typed a filter not yet applied, or has rows selected.
// A failed fetch waits for the next turn.
function busy(main) {
  const active = document.activeElement;
  const typing = main.contains(active) && active.matches("input:not([type=checkbox]), select");
  const typed = [...main.querySelectorAll("input[type=text], input:not([type])")]
    .some((input) => input.value !== input.defaultValue);
  return typing || typed || main.querySelector("input[type=checkbox]:checked") !== null;
}

function refresh(main) {
  if (document.hidden || busy(main)) return;
  fetch(window.location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin" })
    .then((reply) => (reply.ok && !reply.redirected ? reply.text() : null))
    .then((html) => {
      if (html === null || busy(main)) return;
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
      if (fresh) main.innerHTML = fresh.innerHTML;
    })
    .catch(() => {});
}

const main = document.getElementById("main");
const every = main && Number(main.dataset.live);
if (every > 0) window.setInterval(() => refresh(main), every * 1000);
