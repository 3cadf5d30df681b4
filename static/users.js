// The Users page: add an account (a person with a role, or a robot with registry grants) and
// remove one (asked once more), as JSON API calls with the session's CSRF token. Loaded as a
// file: the CSP forbids inline scripts.
"use strict";

(function () {
  const holder = document.getElementById("users");
  if (!holder) {
    return;
  }
  const csrf = holder.dataset.csrf;
  const status = document.getElementById("user-status");

  function api(method, path, body) {
    return window.wharf.api(method, path, csrf, body);
  }

  function say(text, bad) {
    status.textContent = text;
    status.className = bad ? "error" : "notice";
  }

  // `team/** pull,push` -> {pattern: "team/**", pull: true, push: true, delete: false}
  function grant(line) {
    const parts = line.trim().split(/\s+/);
    const rights = (parts[1] || "").split(",");
    for (const r of rights) {
      if (["pull", "push", "delete"].indexOf(r) === -1) {
        throw new Error("grant " + JSON.stringify(line) + ": give PATTERN followed by pull, push and/or delete, separated by commas");
      }
    }
    return {
      pattern: parts[0],
      pull: rights.indexOf("pull") !== -1,
      push: rights.indexOf("push") !== -1,
      delete: rights.indexOf("delete") !== -1,
    };
  }

  const kind = document.getElementById("user-kind");
  const role = document.getElementById("user-role");
  kind.addEventListener("change", function () {
    role.disabled = kind.value === "robot";
  });

  document.getElementById("user-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    const name = document.getElementById("user-name").value.trim();
    try {
      const request = {
        name: name,
        kind: kind.value,
        password: document.getElementById("user-password").value,
        grants: document.getElementById("user-grants").value.split("\n")
          .filter(function (l) { return l.trim() !== ""; }).map(grant),
      };
      if (kind.value === "user") {
        request.role = role.value;
      }
      await api("POST", "/users", request);
      window.location.reload();
    } catch (e) {
      say("Could not add " + name + ": " + e.message, true);
    }
  });

  document.querySelectorAll("button.remove-user").forEach(function (button) {
    button.addEventListener("click", async function () {
      if (!window.wharf.confirmed(button)) {
        return;
      }
      const name = button.closest("tr").dataset.user;
      try {
        await api("DELETE", "/users/" + encodeURIComponent(name));
        window.location.reload();
      } catch (e) {
        say("Could not remove " + name + ": " + e.message, true);
      }
    });
  });
})();
