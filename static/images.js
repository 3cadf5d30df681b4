// The Images pages: the list (pull, prune, remove), an image's page (tag, push) and the build
// page. Every change is a call of the JSON API with the session's CSRF token; long ones show the
// daemon's NDJSON progress as it streams in. Loaded as a file: the CSP forbids inline scripts.
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

// Pulls (the list's form) and pushes (an image's page): the transfer goes to the JSON API with
// the session's CSRF token and its NDJSON progress shows as it comes: a bar of the bytes of
// every layer so far, a line per layer done, and the outcome.
function transfer(kind, path, request, done) {
  const form = document.getElementById(kind + "-form");
  if (!form) {
    return;
  }
  const input = document.getElementById(kind + "-reference");
  const button = document.getElementById(kind + "-button");
  const log = document.getElementById(kind + "-log");
  const status = document.getElementById(kind + "-status");
  const bar = document.getElementById(kind + "-progress");
  const verb = kind === "pull" ? "Pull" : "Push";

  function note(text) {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
  }

  function short(digest) {
    return String(digest || "").replace(/^sha256:/, "").slice(0, 12);
  }

  // Bytes so far and in all, per layer moving, for the progress bar.
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
      case "uploading":
        layers.set(event.digest, [event.current, event.total]);
        showBytes();
        break;
      case "stored":
        layers.set(event.digest, [event.size, event.size]);
        showBytes();
        note("downloaded " + short(event.digest) + " (" + event.size + " bytes)");
        break;
      case "pushed":
        layers.set(event.digest, [event.size, event.size]);
        showBytes();
        note((event.existed ? "already there " : "pushed ") + short(event.digest) + " (" + event.size + " bytes)");
        break;
      case "unpacked":
        note("unpacked " + short(event.chain_id));
        break;
      case "done":
        status.textContent = verb + "ed " + input.value.trim() + " (" + event.digest + ")";
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
    status.textContent = verb + "ing " + reference + "…";
    status.className = "";
    try {
      const response = await fetch("/api/v1" + path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
        body: JSON.stringify(request(form, reference)),
      });
      if (!response.ok) {
        const body = await response.json().catch(function () {
          return { message: response.status + " " + response.statusText };
        });
        throw new Error(body.message);
      }
      await window.wharf.ndjson(response, show);
      if (status.className !== "ok") {
        throw new Error("the daemon ended the " + kind + " without saying it was done");
      }
      done(status);
    } catch (failure) {
      status.textContent = verb + " failed: " + failure.message;
      status.className = "error";
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  });
}

transfer("pull", "/images/pull", function (form, reference) {
  return { reference: reference };
}, function (status) {
  const link = document.createElement("a");
  link.href = "/images";
  link.id = "pull-refresh";
  link.textContent = "Show it in the list";
  status.append(" ", link);
});

transfer("push", "/images/push", function (form, reference) {
  return { name: form.dataset.source, reference: reference };
}, function () {});

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

// The build page: the context (a chosen tar, or a tar made here of the pasted Dockerfile) goes
// to the JSON API, and the build's log streams into the page as the daemon writes it.
(function () {
  const form = document.getElementById("build-form");
  if (!form) {
    return;
  }
  const status = document.getElementById("build-status");
  const log = document.getElementById("build-log");
  const button = document.getElementById("build-button");

  // One ustar header field: text, NUL-padded to its width.
  function field(header, offset, width, text) {
    const bytes = new TextEncoder().encode(text);
    header.set(bytes.slice(0, width), offset);
  }

  function octal(value, width) {
    return value.toString(8).padStart(width - 1, "0") + "\0";
  }

  // A tar holding one file, "Dockerfile" (or the path given), with `text` in it.
  function tarOf(name, text) {
    const body = new TextEncoder().encode(text);
    const header = new Uint8Array(512);
    field(header, 0, 100, name);
    field(header, 100, 8, octal(0o644, 8));
    field(header, 108, 8, octal(0, 8));
    field(header, 116, 8, octal(0, 8));
    field(header, 124, 12, octal(body.length, 12));
    field(header, 136, 12, octal(Math.floor(Date.now() / 1000), 12));
    field(header, 148, 8, "        ");
    field(header, 156, 1, "0");
    field(header, 257, 6, "ustar\0");
    field(header, 263, 2, "00");
    let sum = 0;
    header.forEach(function (b) {
      sum += b;
    });
    field(header, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
    const padded = Math.ceil(body.length / 512) * 512;
    const tar = new Uint8Array(512 + padded + 1024);
    tar.set(header, 0);
    tar.set(body, 512);
    return tar;
  }

  form.addEventListener("submit", async function (submitted) {
    submitted.preventDefault();
    const tag = document.getElementById("build-tag").value.trim();
    const file = document.getElementById("build-context").files[0];
    const path = document.getElementById("build-file").value.trim() || "Dockerfile";
    const dockerfile = document.getElementById("build-dockerfile").value;
    if (!file && !dockerfile.trim()) {
      status.textContent = "Give a context tar or a Dockerfile.";
      status.className = "error";
      return;
    }
    const args = {};
    document.getElementById("build-args").value.split("\n").forEach(function (line) {
      const at = line.indexOf("=");
      if (at > 0) {
        args[line.slice(0, at).trim()] = line.slice(at + 1);
      }
    });
    let query = "?dockerfile=" + encodeURIComponent(path) + "&buildargs=" + encodeURIComponent(JSON.stringify(args));
    if (tag) {
      query += "&t=" + encodeURIComponent(tag);
    }
    if (document.getElementById("build-no-cache").checked) {
      query += "&nocache=true";
    }
    button.disabled = true;
    log.textContent = "";
    status.textContent = "Building…";
    status.className = "";
    // Stay at the bottom while the reader is there; leave them be when they scrolled up.
    function append(text) {
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.textContent += text;
      if (atEnd) {
        log.scrollTop = log.scrollHeight;
      }
    }
    try {
      const response = await fetch("/api/v1/build" + query, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/x-tar", "X-CSRF-Token": form.dataset.csrf },
        body: file ? file : tarOf(path, dockerfile),
      });
      if (!response.ok) {
        const failure = await response.json().catch(function () {
          return { message: response.status + " " + response.statusText };
        });
        throw new Error(failure.message);
      }
      let outcome = null;
      await window.wharf.ndjson(response, function (event) {
        if (event.stream !== undefined) {
          append(event.stream);
        } else {
          outcome = event;
        }
      });
      if (!outcome) {
        throw new Error("the daemon ended the build without a result");
      }
      if (outcome.error) {
        throw new Error(outcome.error);
      }
      status.textContent = "Built " + outcome.digest + " (" + outcome.cached_steps + " of " +
        outcome.layer_steps + " layer steps from the cache).";
      status.className = "ok";
      if (outcome.tags && outcome.tags.length > 0) {
        const link = document.createElement("a");
        link.href = "/images/detail?name=" + encodeURIComponent(outcome.tags[0]);
        link.id = "build-image-link";
        link.textContent = " Open " + outcome.tags[0];
        status.appendChild(link);
      }
    } catch (e) {
      status.textContent = "The build failed: " + e.message;
      status.className = "error";
    } finally {
      button.disabled = false;
    }
  });
})();
