// The Registry pages: deleting a tag (asked once more) and garbage collection (a preview of
// what it frees, then the real run), as JSON API calls with the session's CSRF token. Loaded
// as a file: the CSP forbids inline scripts.
"use strict";

(function () {
  const api = window.wharf.api;

  function bytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }

  const table = document.getElementById("tag-table");
  if (table) {
    const status = document.getElementById("registry-status");
    document.querySelectorAll("button.delete-tag").forEach(function (button) {
      button.addEventListener("click", async function () {
        if (!window.wharf.confirmed(button)) {
          return;
        }
        const tag = button.closest("tr").dataset.tag;
        const repository = table.dataset.repository;
        try {
          await api("DELETE", "/registry/tags?repository=" + encodeURIComponent(repository) +
            "&tag=" + encodeURIComponent(tag), table.dataset.csrf);
          window.location.reload();
        } catch (e) {
          status.textContent = "Could not delete " + repository + ":" + tag + ": " + e.message;
          status.className = "error";
        }
      });
    });
  }

  // A repository's anonymous pull, switched by admins.
  const anonymous = document.getElementById("anonymous-pull");
  if (table && anonymous) {
    const status = document.getElementById("registry-status");
    anonymous.addEventListener("change", async function () {
      const repository = table.dataset.repository;
      try {
        await api("PUT", "/registry/settings?repository=" + encodeURIComponent(repository),
          table.dataset.csrf, { anonymous_pull: anonymous.checked });
        status.textContent = "Anonymous pull of " + repository + " is " + (anonymous.checked ? "on." : "off.");
        status.className = "notice";
      } catch (e) {
        status.textContent = "Could not change anonymous pull: " + e.message;
        status.className = "error";
        anonymous.checked = !anonymous.checked;
      }
    });
  }

  const registry = document.getElementById("registry");
  const preview = document.getElementById("gc-preview");
  if (registry && preview) {
    const status = document.getElementById("gc-status");
    const run = async function (dryRun) {
      status.className = "notice";
      status.textContent = dryRun ? "Looking…" : "Collecting…";
      try {
        const response = await api("POST", "/registry/gc", registry.dataset.csrf, { dry_run: dryRun });
        const report = await response.json();
        status.textContent = (dryRun ? "Would free " : "Freed ") + bytes(report.bytes) + ": " +
          report.blobs + " blobs, " + report.layers + " unpacked layers, " + report.links + " repository links.";
      } catch (e) {
        status.textContent = "Garbage collection failed: " + e.message;
        status.className = "error";
      }
    };
    preview.addEventListener("click", function () {
      run(true);
    });
    const collect = document.getElementById("gc-run");
    collect.addEventListener("click", function () {
      if (window.wharf.confirmed(collect)) {
        run(false);
      }
    });
  }
})();

// A manifest's page: delete it (asked once more), then back to its repository.
(function () {
  const actions = document.getElementById("manifest-actions");
  if (!actions) {
    return;
  }
  const button = document.getElementById("delete-manifest");
  const status = document.getElementById("registry-status");
  button.addEventListener("click", async function () {
    if (!window.wharf.confirmed(button)) {
      return;
    }
    const repository = actions.dataset.repository;
    try {
      await window.wharf.api("DELETE", "/registry/manifests?repository=" + encodeURIComponent(repository) +
        "&digest=" + encodeURIComponent(actions.dataset.digest), actions.dataset.csrf);
      window.location.href = "/registry/repository?name=" + encodeURIComponent(repository);
    } catch (e) {
      status.textContent = "Could not delete the manifest: " + e.message;
      status.className = "error";
    }
  });
})();
