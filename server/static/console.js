// Tablecast console: log in over REST, then one Socket.IO connection carries the table,
// locks, the live number and candles, and backups.

import { LiveChart } from "./chart.js";
import { bytes, describe, when } from "./messages.js";
import { TableView } from "./table.js";

const $ = (id) => document.getElementById(id);
const TOKEN = "tablecast.token";
const USER = "tablecast.username";
const ACK_TIMEOUT_MS = 10000;

const state = {
  socket: null,
  skew: 0, // server clock minus ours, ms
  loaded: false,
  noticeTimer: null,
};

const now = () => Date.now() + state.skew;

// ---- small UI helpers ------------------------------------------------------------------

function setConn(s) {
  const el = $("conn-status");
  el.dataset.state = s;
  el.textContent = s;
}

function notify(text, kind = "error") {
  const el = $("notice");
  clearTimeout(state.noticeTimer);
  if (!text) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.textContent = text;
  el.className = `notice ${kind === "info" ? "info" : ""}`;
  el.hidden = false;
  state.noticeTimer = setTimeout(() => (el.hidden = true), kind === "info" ? 6000 : 20000);
}

function confirmDialog(text, okLabel = "OK") {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

async function call(event, payload = {}) {
  const socket = state.socket;
  if (!socket) return { ok: false, error: { code: "unauthorized", message: "not logged in" } };
  try {
    return await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
  } catch {
    return { ok: false, error: { code: "timeout", message: "no answer" } };
  }
}

async function rest(path, body, token) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  try {
    const resp = await fetch(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
    return await resp.json();
  } catch {
    return { ok: false, error: { code: "timeout", message: "the server cannot be reached" } };
  }
}

// ---- the table, chart and backups --------------------------------------------------------

const table = new TableView({
  grid: $("grid"),
  head: $("grid-head"),
  spacer: $("grid-spacer"),
  layer: $("grid-rows"),
  meta: $("table-meta"),
  call,
  notify,
  confirm: confirmDialog,
  now,
});

let chart = null;
function ensureChart() {
  if (!chart) {
    chart = new LiveChart({ container: $("chart"), picker: $("intervals"), valueEl: $("random-value"), call, notify, describe });
  }
  return chart;
}

async function loadBackups() {
  const ack = await call("list_backups");
  const body = $("backups").tBodies[0];
  if (!ack.ok) {
    notify(describe(ack.error));
    return;
  }
  body.replaceChildren();
  if (ack.backups.length === 0) {
    const tr = body.insertRow();
    const td = tr.insertCell();
    td.colSpan = 4;
    td.className = "muted";
    td.textContent = "No backups yet. One is kept before the table file is first replaced.";
    return;
  }
  for (const b of ack.backups) {
    const tr = body.insertRow();
    tr.dataset.name = b.name;
    tr.insertCell().textContent = when(b.created_at);
    tr.cells[0].title = b.name;
    const rows = tr.insertCell();
    rows.className = "num";
    rows.textContent = b.rows.toLocaleString();
    const size = tr.insertCell();
    size.className = "num";
    size.textContent = bytes(b.bytes);
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "btn small";
    btn.textContent = "Restore";
    btn.setAttribute("aria-label", `Restore the backup from ${when(b.created_at)}`);
    btn.addEventListener("click", () => restore(b));
    tr.insertCell().append(btn);
  }
}

async function restore(b) {
  const ok = await confirmDialog(
    `Restore the backup from ${when(b.created_at)} (${b.rows.toLocaleString()} rows)? The table is replaced for everyone; the current table is kept as a backup first.`,
    "Restore",
  );
  if (!ok) return;
  const ack = await call("restore_backup", { name: b.name });
  if (!ack.ok) {
    notify(describe(ack.error, { action: "restore", now: now() }));
    return;
  }
  notify(`Backup restored: ${ack.total.toLocaleString()} rows.`, "info");
  loadBackups();
}

// ---- adding a row ----------------------------------------------------------------------

function openAdd() {
  const fields = $("add-fields");
  fields.replaceChildren();
  for (const c of table.columns.slice(1)) {
    const label = document.createElement("label");
    label.textContent = `${c.name}`;
    label.htmlFor = `add-${c.name}`;
    const input = document.createElement("input");
    input.id = `add-${c.name}`;
    input.dataset.col = c.name;
    input.dataset.type = c.type;
    input.type = c.type === "text" ? "text" : "number";
    if (c.type !== "text") input.step = c.type === "integer" ? "1" : "any";
    input.placeholder = c.type;
    fields.append(label, input);
  }
  $("add-error").textContent = "";
  $("add-dialog").showModal();
  const first = fields.querySelector("input");
  if (first) first.focus();
}

async function submitAdd(ev) {
  ev.preventDefault();
  const values = {};
  for (const input of $("add-fields").querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    if (input.dataset.type === "text") values[input.dataset.col] = input.value;
    else {
      const v = Number(input.value);
      if (!Number.isFinite(v) || (input.dataset.type === "integer" && !Number.isInteger(v))) {
        $("add-error").textContent = `${input.dataset.col} needs ${input.dataset.type === "integer" ? "a whole number" : "a number"}.`;
        return;
      }
      values[input.dataset.col] = v;
    }
  }
  const ack = await table.add(values);
  if (!ack.ok) {
    $("add-error").textContent = describe(ack.error);
    return;
  }
  $("add-dialog").close();
}

// ---- session and connection --------------------------------------------------------------

function showLogin(message = "") {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("whoami").hidden = true;
  $("logout").hidden = true;
  $("login-error").textContent = message;
  setConn("offline");
  $("login-username").focus();
}

function showApp(username) {
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("whoami").hidden = false;
  $("whoami").textContent = `signed in as ${username}`;
  $("logout").hidden = false;
  table.me = username;
}

function connect() {
  const username = sessionStorage.getItem(USER);
  showApp(username);
  ensureChart();
  setConn("reconnecting");
  const socket = window.io({ auth: (cb) => cb({ token: sessionStorage.getItem(TOKEN) || "" }) });
  state.socket = socket;
  state.loaded = false;

  socket.on("connect", async () => {
    setConn("connected");
    const t0 = Date.now();
    const pong = await call("ping");
    if (pong.ok) state.skew = pong.ts - (t0 + Date.now()) / 2;
    if (state.loaded) {
      await table.resync();
      await table.refreshLocks();
    } else {
      state.loaded = true;
      await table.reload();
    }
    chart.dropSubscription();
    await chart.subscribe();
    loadBackups();
  });
  socket.on("disconnect", (reason) => {
    setConn(socket.active && navigator.onLine ? "reconnecting" : "offline");
    if (reason !== "io client disconnect") notify("Connection lost; reconnecting. Your view will catch up when it is back.", "info");
  });
  socket.on("connect_error", (err) => {
    if (err && err.data && err.data.code === "unauthorized") {
      socket.disconnect();
      endSession("Your session has ended. Please log in again.");
      return;
    }
    setConn(socket.active && navigator.onLine ? "reconnecting" : "offline");
  });
  socket.io.on("reconnect_attempt", () => setConn(navigator.onLine ? "reconnecting" : "offline"));
  socket.on("csv_update", (change) => {
    table.onUpdate(change);
    if (change.op === "reset") loadBackups();
  });
  socket.on("lock_status", (status) => table.onLock(status));
  socket.on("random_number", (n) => chart.onNumber(n));
  socket.on("ohlc", (c) => chart.onCandle(c));
}

function endSession(message) {
  if (state.socket) {
    state.socket.removeAllListeners();
    state.socket.disconnect();
    state.socket = null;
  }
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(USER);
  table.reset();
  table.layer.replaceChildren();
  table.rowEls.clear();
  showLogin(message);
}

async function login(register) {
  const username = $("login-username").value.trim();
  const password = $("login-password").value;
  if (!username || !password) {
    $("login-error").textContent = "Enter a username and a password.";
    return;
  }
  $("login-error").textContent = "";
  if (register) {
    const reg = await rest("/api/register", { username, password });
    if (!reg.ok) {
      $("login-error").textContent = describe(reg.error);
      return;
    }
  }
  const ack = await rest("/api/login", { username, password });
  if (!ack.ok) {
    $("login-error").textContent =
      ack.error.code === "unauthorized" ? "Wrong username or password." : describe(ack.error);
    return;
  }
  sessionStorage.setItem(TOKEN, ack.access_token);
  sessionStorage.setItem(USER, ack.username);
  $("login-password").value = "";
  connect();
}

async function logout() {
  const token = sessionStorage.getItem(TOKEN);
  if (table.editing) await table.cancel();
  if (token) await rest("/api/logout", {}, token);
  endSession("");
}

// ---- wiring --------------------------------------------------------------------------------

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  login(false);
});
$("register").addEventListener("click", () => login(true));
$("logout").addEventListener("click", logout);
$("add-row").addEventListener("click", openAdd);
$("add-form").addEventListener("submit", submitAdd);
$("add-cancel").addEventListener("click", () => $("add-dialog").close());
$("backups-refresh").addEventListener("click", loadBackups);
window.addEventListener("offline", () => setConn("offline"));
window.addEventListener("online", () => {
  if (state.socket && !state.socket.connected) setConn("reconnecting");
});
setInterval(() => {
  if (state.socket && state.socket.connected) loadBackups();
}, 30000);

window.tablecast = { table, state, get chart() { return chart; } };

if (sessionStorage.getItem(TOKEN) && sessionStorage.getItem(USER)) connect();
else showLogin();
