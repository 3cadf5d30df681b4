// The Containers pages: actions on containers (one, or the selected ones), the "create
// container" form, a container's live logs, stats and terminal; and the Volumes and Networks
// pages. Every change is a call of the JSON API with the
// session's CSRF token, so the server checks the same rights as for any client. Loaded as a
// file: the CSP forbids inline scripts.
"use strict";

(function () {
  const holder = document.getElementById("containers");
  const csrf = holder ? holder.dataset.csrf : null;
  const status = document.getElementById("container-status");

  function say(text, bad) {
    if (status) {
      status.textContent = text;
      status.className = bad ? "error" : "notice";
    }
  }

  const api = window.wharf.api;

  const confirmed = window.wharf.confirmed;

  // `sh -c "echo hi"` -> ["sh", "-c", "echo hi"]: words, with '…' and "…" kept whole.
  function words(text) {
    const out = [];
    const pattern = /"([^"]*)"|'([^']*)'|(\S+)/g;
    let m;
    while ((m = pattern.exec(text)) !== null) {
      out.push(m[1] !== undefined ? m[1] : m[2] !== undefined ? m[2] : m[3]);
    }
    return out;
  }

  function act(action, id) {
    const path = "/containers/" + encodeURIComponent(id);
    if (action === "remove") {
      return api("DELETE", path + "?force=true", csrf);
    }
    return api("POST", path + "/" + action, csrf);
  }

  // One container's buttons (in a table row, or on its own page). Listened for on the
  // document, so rows htmx puts in place work as the first ones did.
  document.addEventListener("click", async function (event) {
    const button = event.target.closest ? event.target.closest("button.act") : null;
    if (!button) {
      return;
    }
    {
      const owner = button.closest("[data-id]");
      const name = owner.dataset.name;
      const action = button.dataset.action;
      if (!confirmed(button)) {
        return;
      }
      button.disabled = true;
      say(action + " " + name + "…", false);
      try {
        await act(action, owner.dataset.id);
        if (action === "remove" && owner.dataset.afterRemove) {
          window.location.assign(owner.dataset.afterRemove);
        } else {
          window.location.reload();
        }
      } catch (e) {
        say(action + " " + name + " failed: " + e.message, true);
        button.disabled = false;
      }
    }
  });

  // The list (rows, counts, page links), fetched again every 5 s by htmx (see its hx-get)
  // while the page is visible and nothing is selected, being confirmed or has the keyboard's
  // focus (:focus-visible, not a mouse click's), and swapped in only if that is still so when
  // the answer comes. An answer that is
  // not the list (the session ended: the sign-in page) leads to signing in instead.
  const busy = function () {
    const list = document.getElementById("container-list");
    return document.querySelector("input.pick:checked, button[data-armed='yes'], button:disabled") !== null ||
      (list !== null && list.querySelector(":focus-visible") !== null);
  };
  if (document.getElementById("container-list") && window.htmx) {
    document.body.addEventListener("htmx:beforeSwap", function (event) {
      const answer = event.detail.xhr;
      if (busy()) {
        event.detail.shouldSwap = false;
      } else if (answer.status !== 200 || answer.responseText.indexOf('id="container-list"') === -1) {
        event.detail.shouldSwap = false;
        window.location.assign("/login");
      }
    });
    const timer = window.setInterval(function () {
      const list = document.getElementById("container-list");
      if (!list) {
        window.clearInterval(timer);
      } else if (document.visibilityState === "visible" && !busy()) {
        window.htmx.trigger(list, "wharf-refresh");
      }
    }, 5000);
  }

  // Bulk actions on the selected rows.
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) {
        box.checked = all.checked;
      });
    });
  }
  document.querySelectorAll("button.bulk").forEach(function (button) {
    button.addEventListener("click", async function () {
      const rows = Array.from(document.querySelectorAll("input.pick:checked")).map(function (box) {
        return box.closest("tr");
      });
      const action = button.dataset.action;
      if (rows.length === 0) {
        say("Select containers first.", true);
        return;
      }
      if (!confirmed(button)) {
        return;
      }
      const failed = [];
      for (const row of rows) {
        try {
          await act(action, row.dataset.id);
        } catch (e) {
          failed.push(row.dataset.name + ": " + e.message);
        }
      }
      if (failed.length > 0) {
        say(action + " failed for " + failed.join("; "), true);
      } else {
        window.location.reload();
      }
    });
  });

  // Volumes and networks: a small form makes one (POST of its named, filled-in fields to the
  // form's data-path); a row's remove button removes one (asked once more).
  document.querySelectorAll("form.make").forEach(function (makeForm) {
    makeForm.addEventListener("submit", async function (event) {
      event.preventDefault();
      const request = {};
      makeForm.querySelectorAll("input[name]").forEach(function (input) {
        if (input.value.trim() !== "") {
          request[input.name] = input.value.trim();
        }
      });
      try {
        await api("POST", makeForm.dataset.path, csrf, request);
        window.location.reload();
      } catch (e) {
        say("Could not create " + makeForm.dataset.kind + " " + request.name + ": " + e.message, true);
      }
    });
  });
  document.querySelectorAll("button.remove-item").forEach(function (button) {
    button.addEventListener("click", async function () {
      const row = button.closest("tr");
      if (!confirmed(button)) {
        return;
      }
      try {
        await api("DELETE", row.dataset.path + "/" + encodeURIComponent(row.dataset.name), csrf);
        window.location.reload();
      } catch (e) {
        say("Could not remove " + row.dataset.kind + " " + row.dataset.name + ": " + e.message, true);
      }
    });
  });

  // The create form: create, start, then the container's page.
  const form = document.getElementById("create-form");
  if (form) {
    const field = function (id) {
      return document.getElementById(id).value.trim();
    };
    const created = document.getElementById("create-status");
    const lines = function (text) {
      return text.split("\n").map(function (l) { return l.trim(); }).filter(function (l) { return l !== ""; });
    };
    // `512m`, `1g`, `64k` or bytes.
    const bytes = function (text) {
      const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)b?$/i.exec(text);
      if (!m) {
        throw new Error("memory limit " + JSON.stringify(text) + ": give it as 256m, 1g or bytes");
      }
      const scale = { "": 1, k: 1024, m: 1024 * 1024, g: 1024 * 1024 * 1024 }[m[2].toLowerCase()];
      return Math.round(parseFloat(m[1]) * scale);
    };
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const button = document.getElementById("create-button");
      button.disabled = true;
      created.className = "notice";
      try {
        const request = { image: field("create-image"), restart: field("create-restart") };
        if (field("create-name") !== "") {
          request.name = field("create-name");
        }
        if (field("create-command") !== "") {
          request.cmd = words(field("create-command"));
        }
        request.env = lines(document.getElementById("create-env").value);
        request.ports = field("create-ports").split(/[\s,]+/).filter(function (p) { return p !== ""; });
        request.binds = lines(document.getElementById("create-volumes").value);
        request.network = field("create-network");
        if (field("create-memory") !== "") {
          request.memory = bytes(field("create-memory"));
        }
        if (field("create-cpus") !== "") {
          const cpus = Number(field("create-cpus"));
          if (!(cpus > 0)) {
            throw new Error("CPUs " + JSON.stringify(field("create-cpus")) + ": give a number above 0, such as 0.5");
          }
          request.nano_cpus = Math.round(cpus * 1e9);
        }
        created.textContent = "Creating…";
        const response = await api("POST", "/containers", form.dataset.csrf, request);
        const container = await response.json();
        created.textContent = "Starting " + container.name + "…";
        try {
          await api("POST", "/containers/" + container.id + "/start", form.dataset.csrf);
        } catch (e) {
          // Created but not started: say so, and lead to it (a second submit would clash
          // with its name).
          created.replaceChildren(
            document.createTextNode("Created " + container.name + ", but it did not start: " + e.message + " "));
          const link = document.createElement("a");
          link.href = "/containers/" + container.id;
          link.textContent = "Open its page";
          created.appendChild(link);
          created.className = "error";
          return;
        }
        window.location.assign("/containers/" + container.id);
      } catch (e) {
        created.textContent = "Could not create the container: " + e.message;
        created.className = "error";
        button.disabled = false;
      }
    });
  }

  // A container's logs: the last lines, then new ones as they come. The view follows the end
  // unless the reader scrolled up; the search shows only matching lines.
  const logs = document.getElementById("logs");
  if (logs) {
    const tail = document.getElementById("log-tail");
    const since = document.getElementById("log-since");
    const search = document.getElementById("log-search");
    const state = document.getElementById("log-state");
    // The lines kept (and shown): the newest ones, at most this many.
    const keep = 5000;
    let entries = [];
    // Each (re)start of the stream has its number; a stream that is not the latest stops.
    let generation = 0;
    let reader = null;
    const matches = function (e) {
      return search.value === "" || e.log.indexOf(search.value) !== -1;
    };
    const line = function (e) {
      const span = document.createElement("span");
      span.className = e.stream === "stderr" ? "stderr" : "stdout";
      span.textContent = e.log.endsWith("\n") ? e.log : e.log + "\n";
      return span;
    };
    const atEnd = function () {
      return logs.scrollHeight - logs.scrollTop - logs.clientHeight < 24;
    };
    const redraw = function () {
      logs.replaceChildren.apply(logs, entries.filter(matches).map(line));
      logs.scrollTop = logs.scrollHeight;
    };
    const follow = async function () {
      const mine = ++generation;
      if (reader) {
        reader.cancel();
        reader = null;
      }
      entries = [];
      logs.replaceChildren();
      let query = tail.value === "all" ? "" : "&tail=" + tail.value;
      if (since.value !== "") {
        // A duration: the daemon counts it back from its own clock, not this browser's.
        query += "&since=" + encodeURIComponent(since.value);
      }
      let response;
      try {
        response = await api("GET", "/containers/" + logs.dataset.id + "/logs?follow=true" + query, csrf);
      } catch (e) {
        if (mine === generation) {
          state.textContent = "Logs unavailable: " + e.message;
        }
        return;
      }
      const own = response.body.getReader();
      if (mine !== generation) {
        own.cancel();
        return;
      }
      state.textContent = "Following…";
      reader = own;
      const decoder = new TextDecoder();
      let rest = "";
      for (;;) {
        const { value, done } = await own.read().catch(function () { return { done: true }; });
        if (done || mine !== generation) {
          break;
        }
        rest += decoder.decode(value, { stream: true });
        const parts = rest.split("\n");
        rest = parts.pop();
        const follow = atEnd();
        for (const part of parts) {
          if (part === "") {
            continue;
          }
          let entry;
          try {
            entry = JSON.parse(part);
          } catch (e) {
            state.textContent = "A log line could not be read: " + e.message;
            continue;
          }
          entries.push(entry);
          if (matches(entry)) {
            logs.appendChild(line(entry));
          }
        }
        // Only the newest lines stay.
        if (entries.length > keep) {
          entries = entries.slice(entries.length - keep);
          while (logs.childNodes.length > keep) {
            logs.removeChild(logs.firstChild);
          }
        }
        if (follow) {
          logs.scrollTop = logs.scrollHeight;
        }
      }
      if (mine === generation) {
        state.textContent = "The container's output ended.";
      }
    };
    tail.addEventListener("change", follow);
    since.addEventListener("change", follow);
    search.addEventListener("input", redraw);
    document.getElementById("log-download").addEventListener("click", function () {
      const text = entries.map(function (e) { return e.time + " " + e.stream + " " + e.log; }).join("");
      const link = document.createElement("a");
      link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
      link.download = document.getElementById("container-name").textContent + ".log";
      link.click();
      URL.revokeObjectURL(link.href);
    });
    follow();
  }

  // A terminal in the container: a new process (a shell by default) with a tty, over the
  // exec WebSocket; it takes the size of its box and follows the window's.
  const box = document.getElementById("terminal");
  if (box && window.Terminal && window.FitAddon) {
    const form = document.getElementById("terminal-form");
    const told = document.getElementById("terminal-state");
    // The open session: its socket, terminal and window listener, ended before a new one.
    let session = null;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (session) {
        session.end();
      }
      const term = new window.Terminal({ cursorBlink: true, scrollback: 5000 });
      const fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      term.open(box);
      fit.fit();
      window.wharfTerminal = term;
      const command = words(document.getElementById("terminal-command").value);
      const user = document.getElementById("terminal-user").value.trim();
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const own = new WebSocket(scheme + "//" + window.location.host + "/api/v1/containers/" +
        encodeURIComponent(box.dataset.id) + "/exec/ws");
      const refit = function () {
        fit.fit();
      };
      window.addEventListener("resize", refit);
      const mine = {
        end: function () {
          window.removeEventListener("resize", refit);
          own.close();
          term.dispose();
        },
      };
      session = mine;
      own.binaryType = "arraybuffer";
      const encoder = new TextEncoder();
      own.addEventListener("open", function () {
        const start = { cmd: command.length > 0 ? command : ["sh"], tty: true, rows: term.rows, cols: term.cols };
        if (user !== "") {
          start.user = user;
        }
        own.send(JSON.stringify(start));
        told.textContent = "Connected.";
        term.focus();
      });
      own.addEventListener("message", function (event) {
        if (typeof event.data === "string") {
          const message = JSON.parse(event.data);
          if (message.error) {
            told.textContent = "Could not start: " + message.error;
          } else if (message.exit_code !== undefined) {
            told.textContent = "The command ended with exit code " + message.exit_code + ".";
          }
          return;
        }
        // One stream byte, then the bytes.
        term.write(new Uint8Array(event.data).subarray(1));
      });
      own.addEventListener("close", function () {
        if (session === mine && told.textContent === "Connected.") {
          told.textContent = "Disconnected.";
        }
      });
      term.onData(function (data) {
        if (own.readyState === WebSocket.OPEN) {
          own.send(encoder.encode(data));
        }
      });
      term.onResize(function (size) {
        if (own.readyState === WebSocket.OPEN) {
          own.send(JSON.stringify({ resize: { rows: size.rows, cols: size.cols } }));
        }
      });
    });
  }

  // Live stats: one reading a second from the API; CPU share and memory over the last two
  // minutes in a chart, and the latest reading as text.
  const chart = document.getElementById("stats");
  if (chart && window.uPlot) {
    const now = document.getElementById("stats-now");
    const keep = 120;
    const data = [[], [], []];
    const plot = new window.uPlot({
      width: Math.max(chart.clientWidth, 300),
      height: 200,
      series: [
        {},
        { label: "CPU %", stroke: "#1f6feb", scale: "%" },
        { label: "Memory MiB", stroke: "#1a7f37", scale: "MiB" },
      ],
      axes: [{}, { scale: "%" }, { scale: "MiB", side: 1, grid: { show: false } }],
    }, data, chart);
    const mib = function (b) { return (b / 1048576).toFixed(1) + " MiB"; };
    const stream = async function () {
      let response;
      try {
        response = await api("GET", "/containers/" + encodeURIComponent(chart.dataset.id) + "/stats?stream=true", csrf);
      } catch (e) {
        now.textContent = "Stats unavailable: " + e.message;
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let rest = "";
      let last = null;
      for (;;) {
        const { value, done } = await reader.read().catch(function () { return { done: true }; });
        if (done) {
          break;
        }
        rest += decoder.decode(value, { stream: true });
        const parts = rest.split("\n");
        rest = parts.pop();
        for (const part of parts) {
          if (part === "") {
            continue;
          }
          const r = JSON.parse(part);
          if (last) {
            const cpu = 100 * (r.cpu_usage_ns - last.cpu_usage_ns) / Math.max(1, r.read_at_ns - last.read_at_ns);
            data[0].push(r.read_at_ns / 1e9);
            data[1].push(cpu);
            data[2].push(r.memory_usage_bytes / 1048576);
            if (data[0].length > keep) {
              data.forEach(function (d) { d.shift(); });
            }
            plot.setData(data);
            now.textContent = "CPU " + cpu.toFixed(1) + "% · memory " + mib(r.memory_usage_bytes) +
              (r.memory_limit_bytes ? " / " + mib(r.memory_limit_bytes) : "") +
              " · " + r.pids_current + " processes";
          }
          last = r;
        }
      }
      now.textContent += " (the container stopped)";
    };
    stream();
  }
})();
