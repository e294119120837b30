// The load generator of bench/run_all.py: every benchmark's clients, in one Node process, so
// Tablecast and the reference server get exactly the same load from exactly the same client
// library (socket.io-client 4.8, websocket transport).
//
//   npm ci --prefix bench/load
//   node bench/load/load.mjs '{"mode": "fanout", "url": "http://127.0.0.1:8000", ...}'
//   (or LOAD_CONFIG='{...}' node bench/load/load.mjs)
//
// Modes (see DEFAULTS for every setting):
//   fanout   one editor sends update_csv open-loop at `rate`/s to a row it has locked while
//            `receivers` sockets of one user listen; delivery latency = receive time in a
//            receiver minus the send time of the update that caused it, one clock.
//   editors  `editors` users, one socket and one locked row each, send update_csv back to
//            back (one in flight each) for `duration_s` or `updates` acks each.
//   idle     `receivers` authenticated sockets connect and stay idle for `settle_s`.
//   page     fetch_csv pages of `limit` rows at offsets spread across the table.
//   download GET /api/fetch_csv?format=csv, the whole table, `runs` times.
//
// Output: exactly one JSON line on stdout (with `error` set when the run could not finish).
// Progress goes to stderr. With `marks: true`, the start and end of each measurement window
// are announced on stderr as `@mark NAME` and the generator waits for one line on stdin
// before going on, so the parent can sample server CPU and memory at those instants.
//
// Every wait is bounded: a server that cannot keep up yields figures, never a hang.
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { io } from "socket.io-client";

const DEFAULTS = {
  url: "http://127.0.0.1:8000",
  password: "bench-password-0123",
  marks: false,
  mark_timeout_ms: 15_000,
  connect_timeout_ms: 20_000,
  ack_timeout_ms: 10_000,
  wave: 200, // sockets connecting at once
  connect_budget_s: 120, // no new wave starts after this; the run goes on with what connected
  deadline_s: 600, // the whole run, whatever happens
  // fanout
  receivers: 100,
  rate: 20,
  duration_s: 10,
  warmup_s: 2,
  drain_s: 10,
  settle_s: 1,
  row_id: 1,
  reader_user: "bench_reader",
  editor_user: "bench_editor",
  // editors
  editors: 1,
  user_prefix: "bench_writer_",
  row_ids: [1],
  updates: 0, // per editor; 0 = as many as fit in duration_s
  warmup_updates: 20,
  login_concurrency: 8,
  // page
  limit: 1000,
  positions: 20,
  requests: 100,
  // download
  runs: 2,
  download_timeout_ms: 300_000,
};

const cfg = { ...DEFAULTS, ...JSON.parse(process.argv[2] ?? process.env.LOAD_CONFIG ?? "{}") };
const log = (message) => process.stderr.write(`${cfg.mode}: ${message}\n`);
let phase = "start";

// ---- output ---------------------------------------------------------------------------------

let finished = false;
function finish(result, code = 0) {
  if (finished) return;
  finished = true;
  process.stdout.write(`${JSON.stringify({ mode: cfg.mode, ...result })}\n`, () => process.exit(code));
}

// The last line of defence: whatever phase hangs, one JSON line still comes out.
setTimeout(() => finish({ error: `deadline of ${cfg.deadline_s}s exceeded during ${phase}` }, 3), cfg.deadline_s * 1000).unref();

// ---- marks: window boundaries the parent samples --------------------------------------------

let stdinLines = 0;
let stdinWaiter = null;
if (cfg.marks) {
  createInterface({ input: process.stdin }).on("line", () => {
    if (stdinWaiter) stdinWaiter();
    else stdinLines += 1;
  });
}

async function mark(name) {
  if (!cfg.marks) return;
  process.stderr.write(`@mark ${name}\n`);
  if (stdinLines > 0) {
    stdinLines -= 1;
    return;
  }
  await new Promise((resolve) => {
    const timer = setTimeout(() => {
      stdinWaiter = null;
      log(`no answer to mark ${name} after ${cfg.mark_timeout_ms} ms; going on`);
      resolve();
    }, cfg.mark_timeout_ms);
    stdinWaiter = () => {
      clearTimeout(timer);
      stdinWaiter = null;
      resolve();
    };
  });
}

// ---- statistics -------------------------------------------------------------------------------

// Same definition as bench/harness.py `summarize`: inclusive linear interpolation.
function quantile(sorted, p) {
  const h = (sorted.length - 1) * p;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
}

const round = (x, digits = 3) => (x === null || !Number.isFinite(x) ? null : Number(x.toFixed(digits)));

function stats(samples) {
  if (samples.length === 0) return { count: 0, p50_ms: null, p99_ms: null, mean_ms: null, max_ms: null };
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    p50_ms: round(quantile(sorted, 0.5)),
    p99_ms: round(quantile(sorted, 0.99)),
    mean_ms: round(sum / sorted.length),
    max_ms: round(sorted[sorted.length - 1]),
  };
}

function countInto(counts, key) {
  counts[key] = (counts[key] ?? 0) + 1;
}

// ---- clients ----------------------------------------------------------------------------------

async function login(username) {
  const response = await fetch(`${cfg.url}/api/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password: cfg.password }),
    signal: AbortSignal.timeout(cfg.connect_timeout_ms),
  });
  const body = await response.json();
  if (!response.ok || !body.ok) throw new Error(`login of ${username}: HTTP ${response.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

// Logins are slow on purpose on Tablecast (a salted hash each): a few at a time.
async function loginAll(usernames) {
  const tokens = new Array(usernames.length);
  let next = 0;
  const worker = async () => {
    while (next < usernames.length) {
      const i = next++;
      tokens[i] = await login(usernames[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(cfg.login_concurrency, usernames.length) }, worker));
  return tokens;
}

let lastConnectError = null;

// One socket; `setup` adds its listeners before it connects, so nothing sent right after the
// handshake is missed. Resolves to the socket, or null when it could not connect in time.
function connectOne(token, setup) {
  return new Promise((resolve) => {
    const socket = io(cfg.url, {
      auth: { token },
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: cfg.connect_timeout_ms,
    });
    setup?.(socket);
    const done = (ok) => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onError);
      if (!ok) socket.close();
      resolve(ok ? socket : null);
    };
    const onConnect = () => done(true);
    const onError = (err) => {
      lastConnectError = String(err?.message ?? err);
      done(false);
    };
    const timer = setTimeout(() => done(false), cfg.connect_timeout_ms + 1000);
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
}

// Waves of `cfg.wave`, each awaited: thousands of simultaneous handshakes would overflow the
// server's listen backlog and measure SYN retries instead of the server.
async function connectMany(count, token, setup) {
  const sockets = [];
  const started = performance.now();
  for (let i = 0; i < count; i += cfg.wave) {
    if (performance.now() - started > cfg.connect_budget_s * 1000) {
      log(`connect budget of ${cfg.connect_budget_s}s spent after ${sockets.length} sockets`);
      break;
    }
    const size = Math.min(cfg.wave, count - i);
    const wave = await Promise.all(Array.from({ length: size }, (_, k) => connectOne(token, (s) => setup?.(s, i + k))));
    for (const s of wave) if (s) sockets.push(s);
  }
  const failed = count - sockets.length;
  if (failed > 0) log(`${failed} of ${count} sockets did not connect (last error: ${lastConnectError})`);
  return { sockets, connect_s: round((performance.now() - started) / 1000), failed };
}

// Whether the websocket negotiated permessage-deflate: every frame then costs a compression
// on the server and an inflation here, so it changes both sides' CPU.
function deflated(sockets) {
  const ws = sockets.find((s) => s.connected)?.io.engine?.transport?.ws;
  return typeof ws?.extensions === "string" ? ws.extensions.includes("permessage-deflate") : null;
}

function closeAll(sockets) {
  for (const s of sockets) s.close();
}

async function ask(socket, event, payload) {
  const ack = await socket.timeout(cfg.ack_timeout_ms).emitWithAck(event, payload);
  if (!ack?.ok) throw new Error(`${event} ${JSON.stringify(payload)} refused: ${JSON.stringify(ack)}`);
  return ack;
}

// Sends `count` updates open-loop: update i is due at start + i/rate whatever the acks do;
// a late timer sends what is due at once. Returns after the last interval has elapsed.
async function openLoop(count, rate, send) {
  const interval = 1000 / rate;
  const start = performance.now();
  for (let i = 0; i < count; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait);
    send(i, due);
  }
  const end = start + count * interval - performance.now();
  if (end > 0) await sleep(end);
  return (performance.now() - start) / 1000;
}

// ---- modes ------------------------------------------------------------------------------------

// Measured updates carry pnl = TAG_BASE + i; warm-up ones stay below it.
const TAG_BASE = 1_000_000;

async function fanout() {
  phase = "login";
  const [readerToken, editorToken] = await loginAll([cfg.reader_user, cfg.editor_user]);
  const total = Math.max(1, Math.round(cfg.rate * cfg.duration_s));
  const sentAt = new Float64Array(total).fill(Number.NaN);
  const delivery = [];
  // Deliveries of the first and the last quarter of the updates: equal when the server keeps
  // up, the last far behind when a backlog builds (then every figure grows with the run).
  const firstQuarter = [];
  const lastQuarter = [];
  const ack = [];
  const sendLag = [];
  const ackErrors = {};
  let acksOk = 0;
  let ackTimeouts = 0;
  let pendingAcks = 0;
  let received = 0;
  let outOfOrder = 0;
  let dropped = 0;
  let measuring = false;

  const listen = (socket) => {
    let lastSeq = -1;
    socket.on("csv_update", (change) => {
      const now = performance.now();
      if (change.seq <= lastSeq) outOfOrder += 1;
      lastSeq = change.seq;
      const i = change.row?.values?.pnl - TAG_BASE;
      if (i >= 0 && i < total && sentAt[i] === sentAt[i]) {
        const latency = now - sentAt[i];
        received += 1;
        delivery.push(latency);
        if (i < total / 4) firstQuarter.push(latency);
        else if (i >= (3 * total) / 4) lastQuarter.push(latency);
      }
    });
    socket.on("disconnect", () => {
      if (measuring) dropped += 1;
    });
  };

  phase = "connecting receivers";
  log(`connecting ${cfg.receivers} receivers`);
  const { sockets, connect_s, failed } = await connectMany(cfg.receivers, readerToken, listen);
  const editor = await connectOne(editorToken);
  if (!editor) throw new Error(`the editor could not connect: ${lastConnectError}`);
  await ask(editor, "lock_row", { id: cfg.row_id });
  await sleep(cfg.settle_s * 1000);

  const send = (tag, measured, due) => {
    const started = performance.now();
    if (measured) sendLag.push(started - due);
    pendingAcks += 1;
    editor.timeout(cfg.ack_timeout_ms).emit("update_csv", { id: cfg.row_id, values: { pnl: tag } }, (err, reply) => {
      pendingAcks -= 1;
      if (!measured) return;
      if (err) ackTimeouts += 1;
      else if (reply?.ok) {
        acksOk += 1;
        ack.push(performance.now() - started);
      } else countInto(ackErrors, reply?.error?.code ?? "malformed");
    });
    return started;
  };

  phase = "warm-up";
  const warm = Math.round(cfg.rate * cfg.warmup_s);
  log(`${sockets.length} receivers in ${connect_s}s; warm-up ${warm} updates, then ${total} at ${cfg.rate}/s`);
  await openLoop(warm, cfg.rate, (i, due) => send(1 + (i % (TAG_BASE - 1)), false, due));

  phase = "measuring";
  const receivers = sockets.filter((s) => s.connected).length;
  measuring = true;
  await mark("window_start");
  const sendWindow = await openLoop(total, cfg.rate, (i, due) => {
    sentAt[i] = send(TAG_BASE + i, true, due);
  });
  await mark("window_end");

  // Deliveries and acks still on their way: waited for, up to drain_s.
  phase = "draining";
  const expected = total * receivers;
  const drainStart = performance.now();
  while ((received < expected || pendingAcks > 0) && performance.now() - drainStart < cfg.drain_s * 1000) {
    await sleep(20);
  }
  const drain = (performance.now() - drainStart) / 1000;
  measuring = false;
  const deflate = deflated(sockets);
  closeAll([...sockets, editor]);
  return {
    receivers_requested: cfg.receivers,
    receivers_connected: receivers,
    receivers_failed: failed,
    receivers_dropped: dropped,
    connect_s,
    rate_per_s: cfg.rate,
    send_window_s: round(sendWindow),
    updates_sent: total,
    acks_ok: acksOk,
    ack_errors: ackErrors,
    ack_timeouts: ackTimeouts,
    acks_unanswered: pendingAcks,
    deliveries_expected: expected,
    deliveries_received: received,
    delivered_pct: expected > 0 ? round((100 * received) / expected, 3) : null,
    out_of_order: outOfOrder,
    permessage_deflate: deflate,
    drain_s: round(drain),
    delivery: stats(delivery),
    first_quarter_p50_ms: stats(firstQuarter).p50_ms,
    last_quarter_p50_ms: stats(lastQuarter).p50_ms,
    ack: stats(ack),
    send_lag_p99_ms: stats(sendLag).p99_ms,
  };
}

async function editors() {
  const count = cfg.editors;
  if (cfg.row_ids.length < count) throw new Error(`${count} editors need ${count} row_ids`);
  phase = "login";
  const tokens = await loginAll(Array.from({ length: count }, (_, i) => `${cfg.user_prefix}${i}`));
  phase = "connecting editors";
  const broadcasts = new Array(count).fill(0);
  const sockets = [];
  for (let i = 0; i < count; i += cfg.wave) {
    const wave = await Promise.all(
      tokens.slice(i, i + cfg.wave).map((token, k) =>
        connectOne(token, (s) => s.on("csv_update", () => (broadcasts[i + k] += 1))),
      ),
    );
    if (wave.includes(null)) throw new Error(`an editor could not connect: ${lastConnectError}`);
    sockets.push(...wave);
  }
  let tag = 1;
  const update = (i) => ({ id: cfg.row_ids[i], values: { pnl: tag++ } });
  phase = "warm-up";
  await Promise.all(
    sockets.map(async (socket, i) => {
      await ask(socket, "lock_row", { id: cfg.row_ids[i] });
      for (let n = 0; n < cfg.warmup_updates; n++) await ask(socket, "update_csv", update(i));
    }),
  );
  log(`${count} editors connected, rows locked, ${cfg.warmup_updates} warm-up updates each`);

  phase = "measuring";
  const ack = [];
  const ackErrors = {};
  let acksOk = 0;
  let ackTimeouts = 0;
  broadcasts.fill(0);
  await mark("window_start");
  const start = performance.now();
  const end = start + cfg.duration_s * 1000;
  await Promise.all(
    sockets.map(async (socket, i) => {
      for (let n = 0; (cfg.updates === 0 || n < cfg.updates) && performance.now() < end; n++) {
        const sent = performance.now();
        try {
          const reply = await socket.timeout(cfg.ack_timeout_ms).emitWithAck("update_csv", update(i));
          if (reply?.ok) {
            acksOk += 1;
            ack.push(performance.now() - sent);
          } else countInto(ackErrors, reply?.error?.code ?? "malformed");
        } catch {
          ackTimeouts += 1;
        }
      }
    }),
  );
  const window = (performance.now() - start) / 1000;
  await mark("window_end");
  closeAll(sockets);
  const writes = acksOk + ackTimeouts + Object.values(ackErrors).reduce((a, b) => a + b, 0);
  return {
    editors: count,
    window_s: round(window),
    writes_ok: acksOk,
    writes_per_s: round(acksOk / window, 1),
    ack_errors: ackErrors,
    ack_timeouts: ackTimeouts,
    // Every editor also receives every broadcast: a share below 100 means some were lost.
    broadcasts_received_pct: writes > 0 ? round((100 * broadcasts.reduce((a, b) => a + b, 0)) / (writes * count), 2) : null,
    ack: stats(ack),
  };
}

async function idle() {
  phase = "login";
  const [token] = await loginAll([cfg.reader_user]);
  await mark("before");
  phase = "connecting";
  let numbers = 0;
  const { sockets, connect_s, failed } = await connectMany(cfg.receivers, token, (s) =>
    s.on("random_number", () => (numbers += 1)),
  );
  log(`${sockets.length} idle sockets in ${connect_s}s; settling ${cfg.settle_s}s`);
  phase = "settling";
  numbers = 0;
  const settleStart = performance.now();
  await sleep(cfg.settle_s * 1000);
  const settled = (performance.now() - settleStart) / 1000;
  await mark("after");
  const connected = sockets.filter((s) => s.connected).length;
  const deflate = deflated(sockets);
  closeAll(sockets);
  return {
    receivers_requested: cfg.receivers,
    receivers_connected: connected,
    receivers_failed: failed,
    connect_s,
    settle_s: round(settled),
    permessage_deflate: deflate,
    // Tablecast sends each authenticated socket one random_number a second: ~1 means alive.
    random_numbers_per_conn_per_s: connected > 0 ? round(numbers / connected / settled, 2) : null,
  };
}

async function pages() {
  phase = "login";
  const [token] = await loginAll([cfg.reader_user]);
  const socket = await connectOne(token);
  if (!socket) throw new Error(`could not connect: ${lastConnectError}`);
  const { total } = await ask(socket, "fetch_csv", { offset: 0, limit: 1 });
  const last = Math.max(0, total - cfg.limit);
  const offsets = Array.from({ length: cfg.positions }, (_, k) =>
    cfg.positions === 1 ? 0 : Math.round((last * k) / (cfg.positions - 1)),
  );
  phase = "warm-up";
  for (const offset of offsets.slice(0, 5)) await ask(socket, "fetch_csv", { offset, limit: cfg.limit });
  phase = "measuring";
  const samples = [];
  let shortPages = 0;
  let pageChars = 0;
  await mark("window_start");
  for (let n = 0; n < cfg.requests; n++) {
    const offset = offsets[n % offsets.length];
    const sent = performance.now();
    const reply = await ask(socket, "fetch_csv", { offset, limit: cfg.limit });
    samples.push(performance.now() - sent);
    if (reply.rows.length !== Math.min(cfg.limit, total - offset)) shortPages += 1;
    if (n === 0) pageChars = JSON.stringify(reply).length;
  }
  await mark("window_end");
  socket.close();
  return {
    total_rows: total,
    limit: cfg.limit,
    positions: offsets.length,
    requests: samples.length,
    short_pages: shortPages,
    page_json_chars: pageChars,
    page: stats(samples),
  };
}

async function download() {
  phase = "login";
  const [token] = await loginAll([cfg.reader_user]);
  const runs = [];
  for (let n = 0; n < cfg.runs; n++) {
    phase = `download ${n + 1}`;
    const started = performance.now();
    const response = await fetch(`${cfg.url}/api/fetch_csv?format=csv`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(cfg.download_timeout_ms),
    });
    if (!response.ok) throw new Error(`download: HTTP ${response.status} ${await response.text()}`);
    const ttfb = performance.now() - started;
    let bytes = 0;
    let lines = 0;
    let head = "";
    for await (const chunk of response.body) {
      if (bytes === 0) head = Buffer.from(chunk.subarray(0, 3)).toString("utf8");
      bytes += chunk.length;
      for (let at = chunk.indexOf(10); at >= 0; at = chunk.indexOf(10, at + 1)) lines += 1;
    }
    if (head !== "id,") throw new Error(`download does not start with the id column: ${JSON.stringify(head)}`);
    runs.push({ s: round((performance.now() - started) / 1000), ttfb_ms: round(ttfb, 1), bytes, rows: lines - 1 });
  }
  const best = runs.reduce((a, b) => (b.s < a.s ? b : a));
  return {
    runs,
    download_s: best.s,
    ttfb_ms: best.ttfb_ms,
    bytes: best.bytes,
    rows: best.rows,
    mb_per_s: round(best.bytes / 1e6 / best.s, 1),
  };
}

const MODES = { fanout, editors, idle, page: pages, download };

try {
  const run = MODES[cfg.mode];
  if (!run) throw new Error(`unknown mode ${JSON.stringify(cfg.mode)}; one of ${Object.keys(MODES).join(", ")}`);
  finish(await run());
} catch (err) {
  finish({ error: `${phase}: ${err?.message ?? err}` }, 1);
}
