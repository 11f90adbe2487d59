// Hopper dashboard: confirmation before actions, and live updates of the page's main part.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// Every data-live seconds, fetch this page's main part again (X-Partial) and put it in place,
// unless the reader is typing in it. A failed fetch just waits for the next turn.
function refresh(main) {
  if (document.hidden || main.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
  fetch(window.location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin" })
    .then((reply) => (reply.ok && !reply.redirected ? reply.text() : null))
    .then((html) => {
      if (html === null) return;
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
      if (fresh) main.innerHTML = fresh.innerHTML;
    })
    .catch(() => {});
}

const main = document.getElementById("main");
const every = main && Number(main.dataset.live);
if (every > 0) window.setInterval(() => refresh(main), every * 1000);
