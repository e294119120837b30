// The reference server of bench/run_all.py: a minimal socket.io 4.8 server that answers
// Tablecast's benchmarked events with the same envelope and payload shapes, everything in
// memory (no journal, no fsync, no checkpoint), so its figures are what the libraries
// themselves cost on this machine.
//
//   npm ci --prefix bench/reference
//   node bench/reference/server.mjs --csv TABLE.csv --port 8001
//   (or TABLE_CSV=... PORT=... node bench/reference/server.mjs)
//
// It loads the CSV once (no id column: ids 1..n in file order; an `id` first column is kept),
// infers each column's type as Tablecast does (integer, number, text), and serves:
//   POST /api/login, GET /healthz, GET /api/fetch_csv (JSON page, or ?format=csv streamed);
//   socket events login, register, ping, fetch_csv, lock_row, unlock_row, update_csv.
// Broadcasts (lock_status, csv_update, and random_number every RANDOM_INTERVAL_MS, default
// 1000, 0 off) go to every connected socket with io.emit. Tokens are not verified: a token is
// just the username it was issued to. Unlike Tablecast there is no cooldown, lock expiry
// sweep, rate limit or persistence. Nothing is printed unless something fails.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { once } from "node:events";
import { Server } from "socket.io";

const LOCK_TTL_MS = 900_000;
const MAX_LIMIT = 10_000;
const CSV_CHUNK_CHARS = 1 << 16;

function argValue(name) {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : undefined;
}

const csvPath = argValue("--csv") ?? process.env.TABLE_CSV;
const port = Number(argValue("--port") ?? process.env.PORT ?? 8001);
const host = argValue("--host") ?? process.env.HOST ?? "127.0.0.1";
const randomIntervalMs = Number(process.env.RANDOM_INTERVAL_MS ?? 1000);
if (!csvPath) {
  console.error("reference: give the table with --csv PATH or TABLE_CSV");
  process.exit(2);
}

// ---- the table -------------------------------------------------------------------------

// RFC 4180 records; the fast path (no quote on the line) is what generated tables take.
function* csvRecords(text) {
  let pos = 0;
  const n = text.length;
  while (pos < n) {
    let end = text.indexOf("\n", pos);
    if (end < 0) end = n;
    const line = text.charCodeAt(end - 1) === 13 ? text.slice(pos, end - 1) : text.slice(pos, end);
    if (!line.includes('"')) {
      pos = end + 1;
      if (line.length > 0) yield line.split(",");
      continue;
    }
    const fields = [];
    let field = "";
    let quoted = false;
    let i = pos;
    for (; i < n; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') {
          field += '"';
          i++;
        } else if (c === '"') quoted = false;
        else field += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") {
        fields.push(field);
        field = "";
      } else if (c === "\n") break;
      else if (c !== "\r") field += c;
    }
    fields.push(field);
    pos = i + 1;
    yield fields;
  }
}

const INTEGER = /^[+-]?\d+$/;

function inferType(records, col) {
  let type = "integer";
  for (const record of records) {
    const v = record[col] ?? "";
    if (v === "") continue;
    if (type === "integer" && INTEGER.test(v) && Number.isSafeInteger(Number(v))) continue;
    if (Number.isFinite(Number(v)) && v.trim() !== "") type = "number";
    else return "text";
  }
  return type;
}

function loadTable(path) {
  const records = Array.from(csvRecords(readFileSync(path, "utf8")));
  const header = records.shift();
  const hasId = header[0] === "id";
  const names = hasId ? header.slice(1) : header;
  const offset = hasId ? 1 : 0;
  const types = names.map((_, i) => inferType(records, i + offset));
  const rows = records.map((record, index) => {
    const values = {};
    names.forEach((name, i) => {
      const raw = record[i + offset] ?? "";
      values[name] = raw === "" ? null : types[i] === "text" ? raw : Number(raw);
    });
    return { id: hasId ? Number(record[0]) : index + 1, version: 1, values };
  });
  const columns = [{ name: "id", type: "integer" }, ...names.map((name, i) => ({ name, type: types[i] }))];
  return { columns, names, types, rows };
}

const table = loadTable(csvPath);
const byId = new Map(table.rows.map((row) => [row.id, row]));
const locks = new Map(); // id -> {id, owner, expires_at}
let seq = 1;

// ---- envelope and validation ------------------------------------------------------------

class Refusal extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

const STATUS = { invalid_input: 400, unauthorized: 401, not_owner: 403, not_found: 404, internal: 500 };

function failure(err) {
  if (err instanceof Refusal) return { ok: false, error: { code: err.code, message: err.message, ...err.details } };
  console.error("reference: internal error", err);
  return { ok: false, error: { code: "internal", message: String(err) } };
}

function object(payload) {
  if (payload === undefined || payload === null) return {};
  if (typeof payload !== "object" || Array.isArray(payload)) throw new Refusal("invalid_input", "payload must be an object");
  return payload;
}

function int(payload, field, { fallback, min = 0, max = Number.MAX_SAFE_INTEGER } = {}) {
  const v = payload[field] ?? fallback;
  if (v === undefined) throw new Refusal("invalid_input", `${field} is required`, { field });
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new Refusal("invalid_input", `${field} must be an integer in ${min}..${max}`, { field });
  }
  return v;
}

function rowOf(payload) {
  const id = int(payload, "id", { min: 1 });
  const row = byId.get(id);
  if (!row) throw new Refusal("not_found", `no row with id ${id}`, { id });
  return row;
}

function issue(username) {
  if (typeof username !== "string" || username === "") throw new Refusal("invalid_input", "username is required", { field: "username" });
  return {
    access_token: `ref.${encodeURIComponent(username)}`,
    token_type: "bearer",
    expires_at: Date.now() + 86_400_000,
    username,
  };
}

function userOf(token) {
  if (typeof token !== "string" || !token.startsWith("ref.")) return "anonymous";
  try {
    return decodeURIComponent(token.slice(4));
  } catch {
    return "anonymous";
  }
}

// ---- operations (shared by REST and sockets) ----------------------------------------------

function page(payload) {
  const offset = int(payload, "offset", { fallback: 0 });
  const limit = int(payload, "limit", { fallback: 1000, max: MAX_LIMIT });
  const result = {
    ok: true,
    columns: table.columns,
    rows: table.rows.slice(offset, offset + limit),
    total: table.rows.length,
    seq,
    locks: [...locks.values()],
  };
  // No change history is kept: any `since` gets the full page, as an over-old one would.
  if (payload.since !== undefined) result.reset = true;
  return result;
}

function lockRow(user, payload) {
  const row = rowOf(payload);
  const held = locks.get(row.id);
  if (held && held.owner !== user && held.expires_at > Date.now()) {
    throw new Refusal("locked", `row ${row.id} is locked by ${held.owner}`, { owner: held.owner, expires_at: held.expires_at });
  }
  const lock = { id: row.id, owner: user, expires_at: Date.now() + LOCK_TTL_MS };
  locks.set(row.id, lock);
  const reason = held && held.owner === user ? "renewed" : "acquired";
  return [{ ok: true, lock }, ["lock_status", { ...lock, state: "locked", reason }]];
}

function unlockRow(user, payload) {
  const row = rowOf(payload);
  const held = locks.get(row.id);
  if (!held) return [{ ok: true }, null];
  if (held.owner !== user) throw new Refusal("not_owner", `row ${row.id} is locked by ${held.owner}`, { owner: held.owner });
  locks.delete(row.id);
  return [{ ok: true }, ["lock_status", { id: row.id, state: "unlocked", owner: user, expires_at: null, reason: "released" }]];
}

function checkedValues(values) {
  if (typeof values !== "object" || values === null || Array.isArray(values)) {
    throw new Refusal("invalid_input", "values must be an object", { field: "values" });
  }
  for (const [name, value] of Object.entries(values)) {
    const i = table.names.indexOf(name);
    if (i < 0) throw new Refusal("invalid_input", `unknown column ${name}`, { field: name });
    const numeric = table.types[i] !== "text";
    const fits = value === null || (numeric ? typeof value === "number" && Number.isFinite(value) : typeof value === "string");
    if (!fits || (table.types[i] === "integer" && value !== null && !Number.isSafeInteger(value))) {
      throw new Refusal("invalid_input", `bad value for ${name}`, { field: name });
    }
  }
  return values;
}

function updateRow(user, payload) {
  const row = rowOf(payload);
  const values = checkedValues(payload.values);
  const held = locks.get(row.id);
  if (!held || held.expires_at <= Date.now()) throw new Refusal("lock_required", `lock row ${row.id} first`);
  if (held.owner !== user) throw new Refusal("locked", `row ${row.id} is locked by ${held.owner}`, { owner: held.owner, expires_at: held.expires_at });
  if (payload.version !== undefined && payload.version !== row.version) {
    throw new Refusal("conflict", `row ${row.id} changed since version ${payload.version}`, { row });
  }
  const before = {};
  for (const name of Object.keys(values)) before[name] = row.values[name];
  seq += 1;
  row.values = { ...row.values, ...values };
  row.version = seq;
  const change = { op: "update", seq, by: user, ts: Date.now(), row, before };
  return [{ ok: true, row }, ["csv_update", change]];
}

// ---- CSV download -------------------------------------------------------------------------

function csvCell(value, type) {
  if (value === null || value === undefined) return "";
  // Whole numbers in a `number` column as Python writes floats (13114.0), for equal bytes.
  let text = type === "number" && Number.isInteger(value) ? `${value}.0` : String(value);
  // The same formula-injection guard as Tablecast's download.
  if (type === "text" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

async function streamCsv(res) {
  res.writeHead(200, {
    "Content-Type": "text/csv; charset=utf-8",
    "Content-Disposition": 'attachment; filename="backend_table.csv"',
  });
  // CRLF like Tablecast's download (Python's csv writer), so both send the same bytes.
  let chunk = ["id", ...table.names].map((name) => csvCell(name, "text")).join(",") + "\r\n";
  for (const row of table.rows) {
    let line = String(row.id);
    for (let i = 0; i < table.names.length; i++) line += "," + csvCell(row.values[table.names[i]], table.types[i]);
    chunk += line + "\r\n";
    if (chunk.length >= CSV_CHUNK_CHARS) {
      // Honour back-pressure, or a slow reader would make the whole table sit in memory.
      if (!res.write(chunk)) await once(res, "drain");
      chunk = "";
    }
  }
  res.end(chunk);
}

// ---- HTTP ----------------------------------------------------------------------------------

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req) {
  const parts = [];
  for await (const part of req) parts.push(part);
  try {
    return JSON.parse(Buffer.concat(parts).toString("utf8") || "{}");
  } catch {
    throw new Refusal("invalid_input", "body must be JSON");
  }
}

async function handle(req, res) {
  const url = new URL(req.url, "http://reference");
  try {
    if (req.method === "GET" && url.pathname === "/healthz") return sendJson(res, 200, { ok: true });
    if (req.method === "POST" && (url.pathname === "/api/login" || url.pathname === "/auth/login")) {
      const body = object(await readJson(req));
      return sendJson(res, 200, { ok: true, ...issue(body.username) });
    }
    if (req.method === "GET" && url.pathname === "/api/fetch_csv") {
      const format = url.searchParams.get("format");
      if (format === "csv" || (req.headers.accept ?? "").includes("text/csv")) return await streamCsv(res);
      const query = {};
      for (const key of ["offset", "limit", "since"]) {
        if (url.searchParams.has(key)) query[key] = Number(url.searchParams.get(key));
      }
      return sendJson(res, 200, page(query));
    }
    return sendJson(res, 404, { ok: false, error: { code: "not_found", message: `no route ${url.pathname}` } });
  } catch (err) {
    const body = failure(err);
    if (!res.headersSent) return sendJson(res, STATUS[body.error.code] ?? 409, body);
    res.destroy();
  }
}

const http = createServer((req, res) => void handle(req, res));
// Defaults kept on purpose (perMessageDeflate off, path /socket.io/): the comparison is with
// what socket.io gives out of the box.
const io = new Server(http);

io.on("connection", (socket) => {
  const token = socket.handshake.auth?.token;
  let user = token ? userOf(token) : null;

  // Each handler returns [ack, broadcast|null]; the ack is sent before the broadcast, as
  // Tablecast does, so the editor's ack never waits behind the fan-out.
  const handlers = {
    login: (payload) => {
      const issued = issue(object(payload).username);
      user = issued.username;
      return [{ ok: true, ...issued }, null];
    },
    register: (payload) => [{ ok: true, username: issue(object(payload).username).username }, null],
    ping: () => [{ ok: true, ts: Date.now() }, null],
    fetch_csv: (payload) => [page(object(payload)), null],
    lock_row: (payload) => lockRow(user, object(payload)),
    unlock_row: (payload) => unlockRow(user, object(payload)),
    update_csv: (payload) => updateRow(user, object(payload)),
  };
  const open = new Set(["login", "register", "ping"]);

  socket.onAny((event, ...args) => {
    const ack = typeof args.at(-1) === "function" ? args.pop() : null;
    let reply;
    let broadcast = null;
    try {
      const handler = handlers[event];
      if (!handler) throw new Refusal("invalid_input", `unknown event ${event}`);
      if (user === null && !open.has(event)) throw new Refusal("unauthorized", "log in first");
      [reply, broadcast] = handler(args[0]);
    } catch (err) {
      reply = failure(err);
    }
    if (ack) ack(reply);
    if (broadcast) io.emit(...broadcast);
  });
});

if (randomIntervalMs > 0) {
  let value = 50;
  let draws = 0;
  setInterval(() => {
    value = Math.min(100, Math.max(0, Math.round((value + (Math.random() * 10 - 5)) * 100) / 100));
    draws += 1;
    io.emit("random_number", { value, ts: Date.now(), seq: draws });
  }, randomIntervalMs).unref();
}

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}

http.on("error", (err) => {
  console.error(`reference: cannot serve on ${host}:${port}: ${err.message}`);
  process.exit(1);
});
http.listen(port, host);
