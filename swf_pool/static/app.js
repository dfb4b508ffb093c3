// swf-pool dashboard: confirm actions, refresh the overview. No framework, no build step.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function refresh(box) {
  const every = Number(box.dataset.every) || 2000;
  const tick = async () => {
    try {
      const response = await fetch(box.dataset.refresh, { credentials: "same-origin" });
      if (response.redirected) {
        window.location.reload(); // logged out: show the login page, not inside the box
        return;
      }
      if (response.ok) {
        box.innerHTML = await response.text();
        box.dataset.refreshed = String(Date.now());
      }
    } catch (error) {
      // the server is away for a moment: keep the last view, try again
    }
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}

document.querySelectorAll("[data-refresh]").forEach(refresh);
