// The Images pages. The list's pull form: sends the pull to the JSON API with the session's CSRF token and
// shows the daemon's NDJSON progress as it streams in. Loaded as a file: the CSP forbids inline
// scripts.
"use strict";

// The list's prune buttons (asked once more): the outcome, then the list again.
(function () {
  const section = document.getElementById("prune");
  if (!section) {
    return;
  }
  const status = document.getElementById("image-status");
  section.querySelectorAll("button.prune").forEach(function (button) {
    button.addEventListener("click", async function () {
      if (!window.wharf.confirmed(button)) {
        return;
      }
      button.disabled = true;
      status.className = "notice";
      status.textContent = "Removing…";
      try {
        const response = await window.wharf.api("POST", "/images/prune?all=" + button.dataset.all, section.dataset.csrf);
        const pruned = await response.json();
        status.textContent = "Removed " + pruned.deleted.length + " images (" + pruned.freed_blobs +
          " blobs, " + pruned.freed_layers + " unpacked layers freed).";
        const again = document.createElement("a");
        again.href = "/images";
        again.id = "prune-refresh";
        again.textContent = " Show the list again";
        status.appendChild(again);
      } catch (e) {
        status.textContent = "Could not remove images: " + e.message;
        status.className = "error";
        button.disabled = false;
      }
    });
  });
})();

// An image's page: give it another name.
(function () {
  const form = document.getElementById("tag-form");
  if (!form) {
    return;
  }
  const status = document.getElementById("image-status");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    const target = document.getElementById("tag-target").value.trim();
    const response = await fetch("/api/v1/images/tag", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
      body: JSON.stringify({ source: form.dataset.source, target: target }),
    });
    if (response.ok) {
      status.textContent = "Tagged " + target + ".";
      status.className = "notice";
    } else {
      const failure = await response.json().catch(function () {
        return { message: response.status + " " + response.statusText };
      });
      status.textContent = "Could not tag " + target + ": " + failure.message;
      status.className = "error";
    }
  });
})();

(function () {
  const form = document.getElementById("pull-form");
  if (!form) {
    return;
  }
  const input = document.getElementById("pull-reference");
  const button = document.getElementById("pull-button");
  const log = document.getElementById("pull-log");
  const status = document.getElementById("pull-status");
  const bar = document.getElementById("pull-progress");

  function note(text) {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
  }

  function short(digest) {
    return String(digest || "").replace(/^sha256:/, "").slice(0, 12);
  }

  // Bytes so far and in all, per layer downloading, for the progress bar.
  let layers = new Map();

  function showBytes() {
    let current = 0;
    let total = 0;
    layers.forEach(function (bytes) {
      current += bytes[0];
      total += bytes[1];
    });
    if (total > 0) {
      bar.max = total;
      bar.value = current;
    }
  }

  function show(event) {
    if (event.error) {
      throw new Error(event.error);
    }
    switch (event.status) {
      case "downloading":
        layers.set(event.digest, [event.current, event.total]);
        showBytes();
        break;
      case "stored":
        layers.set(event.digest, [event.size, event.size]);
        showBytes();
        note("downloaded " + short(event.digest) + " (" + event.size + " bytes)");
        break;
      case "unpacked":
        note("unpacked " + short(event.chain_id));
        break;
      case "done":
        status.textContent = "Pulled " + input.value.trim() + " (" + event.digest + ")";
        status.className = "ok";
        break;
      default:
        note(JSON.stringify(event));
    }
  }

  form.addEventListener("submit", async function (submitted) {
    submitted.preventDefault();
    const reference = input.value.trim();
    if (!reference) {
      return;
    }
    button.disabled = true;
    layers = new Map();
    bar.removeAttribute("value");
    bar.hidden = false;
    log.textContent = "";
    status.textContent = "Pulling " + reference + "…";
    status.className = "";
    try {
      const response = await fetch("/api/v1/images/pull", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
        body: JSON.stringify({ reference: reference }),
      });
      if (!response.ok) {
        const body = await response.json().catch(function () {
          return { message: response.status + " " + response.statusText };
        });
        throw new Error(body.message);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const chunk = await reader.read();
        if (chunk.done) {
          break;
        }
        pending += decoder.decode(chunk.value, { stream: true });
        let newline;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline).trim();
          pending = pending.slice(newline + 1);
          if (line) {
            show(JSON.parse(line));
          }
        }
      }
      if (status.className === "ok") {
        const link = document.createElement("a");
        link.href = "/images";
        link.id = "pull-refresh";
        link.textContent = "Show it in the list";
        status.append(" ", link);
      } else {
        throw new Error("the daemon ended the pull without saying it was done");
      }
    } catch (failure) {
      status.textContent = "Pull failed: " + failure.message;
      status.className = "error";
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  });
})();

// Remove buttons: the first click asks again, the second removes the name through the API.
(function () {
  const table = document.getElementById("images");
  const status = document.getElementById("image-status");
  if (!table) {
    return;
  }
  table.addEventListener("click", async function (clicked) {
    const button = clicked.target.closest("button.remove");
    if (!button) {
      return;
    }
    const name = button.dataset.name;
    if (button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = "Remove " + name + "?";
      return;
    }
    button.disabled = true;
    try {
      const response = await fetch("/api/v1/images?name=" + encodeURIComponent(name), {
        method: "DELETE",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": table.dataset.csrf },
      });
      const body = await response.json().catch(function () {
        return { message: response.status + " " + response.statusText };
      });
      if (!response.ok) {
        throw new Error(body.message);
      }
      button.closest("tr").remove();
      status.textContent =
        "Removed " + name + (body.deleted ? "; the image and " + body.freed_blobs + " unused blobs are gone" : "");
      status.className = "ok";
    } catch (failure) {
      status.textContent = "Could not remove " + name + ": " + failure.message;
      status.className = "error";
      button.disabled = false;
    }
  });
})();
