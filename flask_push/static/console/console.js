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

  // The test send's preview: copy a payload as JSON. The clipboard exists only in a
  // secure context (HTTPS or localhost) and may be refused: then the text is selected
  // for the reader to copy, and the status beside the button says so.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const panel = document.getElementById(button.dataset.copy);
    const block = panel?.querySelector("pre");
    const status = panel?.querySelector(".copy-status");
    if (!block || !status) continue;
    button.addEventListener("click", async () => {
      try {
        if (!navigator.clipboard) throw new Error("no clipboard in this context");
        await navigator.clipboard.writeText(block.textContent);
        status.textContent = "Copied.";
      } catch {
        window.getSelection().selectAllChildren(block);
        status.textContent =
          "The browser did not let the page copy (it allows it on HTTPS): the text is " +
          "selected, copy it with Ctrl+C (⌘C on a Mac).";
      }
    });
  }
});
