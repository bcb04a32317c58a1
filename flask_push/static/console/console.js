// flask-push console: small enhancements only; every page works without this file.
// Loaded from a file (the Content-Security-Policy allows no inline script).
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Actions that cannot be undone ask first.
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // Times are written in UTC by the server; show them in the reader's own zone,
  // named, since the sentences of the timelines say UTC.
  const format = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short",
  });
  for (const node of document.querySelectorAll("time[datetime]")) {
    const when = new Date(node.dateTime);
    if (!Number.isNaN(when.getTime())) node.textContent = format.format(when);
  }

  // The test send's preview: copy a payload as JSON.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const block = document.getElementById(button.dataset.copy)?.querySelector("pre");
      if (!block || !navigator.clipboard) return;
      await navigator.clipboard.writeText(block.textContent);
      button.textContent = "Copied";
    });
  }
});
