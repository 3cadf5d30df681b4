// What the dashboard's page scripts share: calls of the JSON API with the session's CSRF token,
// resolving to the response or throwing with the daemon's message, and buttons that ask first. Loaded as a file: the CSP
// forbids inline scripts.
"use strict";

window.wharf = {
  api: async function (method, path, token, body) {
    const headers = { "X-CSRF-Token": token };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    const response = await fetch("/api/v1" + path, {
      method: method,
      credentials: "same-origin",
      headers: headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok) {
      const failure = await response.json().catch(function () {
        return { message: response.status + " " + response.statusText };
      });
      throw new Error(failure.message);
    }
    return response;
  },

  // Reads a response of NDJSON lines (a pull's, a push's, a build's progress), calling
  // onEvent with each parsed line as it arrives (a last line without its newline too). When
  // onEvent throws, the stream is let go and the error goes on to the caller.
  ndjson: async function (response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    const each = function () {
      let end;
      while ((end = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, end).trim();
        pending = pending.slice(end + 1);
        if (line) {
          onEvent(JSON.parse(line));
        }
      }
    };
    try {
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) {
          break;
        }
        pending += decoder.decode(chunk.value, { stream: true });
        each();
      }
      pending += decoder.decode() + "\n";
      each();
    } finally {
      reader.cancel().catch(function () {});
    }
  },

  // A button with a question (data-confirm) asks it on the first press (click, Enter or
  // Space), its label becoming the question, and acts on the second: true when it may act now.
  confirmed: function (button) {
    if (!button.dataset.confirm || button.dataset.armed === "yes") {
      return true;
    }
    button.dataset.armed = "yes";
    button.textContent = button.dataset.confirm;
    return false;
  },
};

// The page's own entry in the header is marked, for screen readers and the eye.
document.addEventListener("DOMContentLoaded", function () {
  const here = "/" + window.location.pathname.split("/")[1];
  document.querySelectorAll("nav a").forEach(function (link) {
    if (link.getAttribute("href") === here) {
      link.setAttribute("aria-current", "page");
    }
  });
});
