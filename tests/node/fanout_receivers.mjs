// Receivers for tests/test_fanout_order.py: sockets of several transport kinds connect in
// staggered waves while the test's editors change the table, record every broadcast, and
// some emit events of their own (ping, fetch_csv since) so acks interleave with broadcasts on
// the same socket. Once every wave is connected (and every late upgrade done) a line
// {"ready": true} goes to stdout. The test then writes one JSON line to stdin:
// {final_seq, since, editors: {username: {toggle, log}}}. Every socket must then reach
// final_seq and hold each csv_update from its first to final_seq exactly once, in order, equal
// to the server's history; every draw stored after its first `numbers` answer must arrive once,
// in order, seqs stepping by 1; per editor, the csv_update and lock_status events must be the
// tail of what that editor did, in its order.
// A fault fails the scenario with the counts per kind; no fault prints them as the result.
//
// Kinds: websocket, polling, upgrade (polling, then the client's own upgrade to websocket),
// late_upgrade (polling until it has received broadcasts, then an upgrade probe, so the
// upgrade happens while broadcasts are flowing to the socket).
//
// Env: TABLECAST_URL, TABLECAST_TOKEN, TABLECAST_WAVES (default 3), TABLECAST_WAVE_MS
// (default 700), TABLECAST_KINDS (default all four, comma-separated), TABLECAST_TOTAL_MS
// (default 90000). With TABLECAST_SELF_TEST=1 it only runs its checks on made-up streams
// (each fault must be counted, a clean stream must not be) and needs no server.

import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";

import { ask, check, connected, env, isInt, isObject, openSocket, run, ScenarioError } from "./lib.mjs";

const WAVES = Number(process.env.TABLECAST_WAVES || 3);
const WAVE_MS = Number(process.env.TABLECAST_WAVE_MS || 700);
const KINDS = (process.env.TABLECAST_KINDS || "websocket,polling,upgrade,late_upgrade").split(",");
const TOTAL_MS = Number(process.env.TABLECAST_TOTAL_MS || 90_000);
const FINAL_WAIT_MS = 20_000;
const CHAT_PAUSE_MS = 10;
const LATE_UPGRADE_AFTER = 5; // broadcasts received over polling before the probe starts

const OPTIONS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
  upgrade: {},
  late_upgrade: { upgrade: false },
};
const FINAL_TRANSPORT = { websocket: "websocket", polling: "polling", upgrade: "websocket", late_upgrade: "websocket" };
const FAULTS = [
  "out_of_order",
  "duplicates",
  "gaps",
  "beyond",
  "corrupt",
  "random_out_of_order",
  "random_duplicates",
  "random_gaps",
  "random_corrupt",
  "editor_order",
  "ack_errors",
  "disconnects",
  "connect_errors",
  "wrong_transport",
];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function pairs(values) {
  const out = [];
  for (let i = 1; i < values.length; i += 1) out.push([values[i - 1], values[i]]);
  return out;
}

// The same definitions as the Python side: all zero exactly when `seqs` is first..final with
// first <= start (the seq right after the socket's first page).
function seqFaults(seqs, start, final) {
  const first = seqs.length ? Math.min(start, seqs[0]) : start;
  const have = new Set(seqs);
  let gaps = 0;
  for (let seq = first; seq <= final; seq += 1) if (!have.has(seq)) gaps += 1;
  return {
    out_of_order: pairs(seqs).filter(([a, b]) => b < a).length,
    duplicates: seqs.length - have.size,
    gaps,
    beyond: seqs.filter((seq) => seq > final).length,
  };
}

// random_number against the server's stored draws, placed by ts (`numbers` has no seq): every
// draw stored after the socket's mark (the newest draw when it joined) must arrive once, in
// order, with its stored value, and seq - place must stay constant (seqs step by 1).
function drawFaults(draws, markTs, stored) {
  const place = new Map(stored.map((draw, i) => [draw.ts, i]));
  const endTs = stored.length ? stored[stored.length - 1].ts : -1;
  const got = draws.filter((draw) => draw.ts <= endTs);
  const indices = got.map((draw) => place.get(draw.ts) ?? -1);
  const offsets = got.map((draw, i) => draw.seq - indices[i]);
  let corrupt = got.filter(
    (draw, i) => indices[i] < 0 || draw.value !== stored[indices[i]].value || offsets[i] !== offsets[0],
  ).length;
  let start = 0;
  if (place.has(markTs)) start = place.get(markTs) + 1;
  else if (markTs !== null) corrupt += 1;
  const faults = seqFaults(
    indices.filter((i) => i >= 0),
    start,
    stored.length - 1,
  );
  return {
    random_out_of_order: faults.out_of_order,
    random_duplicates: faults.duplicates,
    random_gaps: faults.gaps,
    random_corrupt: corrupt,
  };
}

// The key an editor logged for each of its own changes and toggle-row lock changes.
function editorKey(event, data, toggles) {
  if (event === "csv_update") {
    if (data.op === "update") return [data.by, `update:${data.row.id}:${data.row.values.broker}`];
    if (data.op === "add") return [data.by, `add:${data.row.id}`];
    if (data.op === "delete") return [data.by, `delete:${data.id}`];
    return null;
  }
  if (event === "lock_status" && toggles.has(data.id)) {
    return [toggles.get(data.id), `lock:${data.id}:${data.state}`];
  }
  return null;
}

function editorOrderFaults(seen, editors) {
  const toggles = new Map(Object.entries(editors).map(([user, e]) => [e.toggle, user]));
  const got = new Map(Object.keys(editors).map((user) => [user, []]));
  for (const { event, data } of seen) {
    const key = editorKey(event, data, toggles);
    if (key && got.has(key[0])) got.get(key[0]).push(key[1]);
  }
  let faults = 0;
  for (const [user, keys] of got) {
    const log = editors[user].log;
    if (!isDeepStrictEqual(keys, log.slice(log.length - keys.length))) faults += 1;
  }
  return faults;
}

class Receiver {
  constructor(url, token, kind, chatty, track) {
    this.kind = kind;
    this.chatty = chatty;
    this.socket = track(openSocket(url, { auth: { token }, ...OPTIONS[kind] }));
    this.acks = 0;
    this.ackErrors = [];
    this.disconnects = [];
    this.connectErrors = [];
    this.onPolling = 0;
    this.upgraded = false;
    this.stopping = false;
    this.chatter = null;
    this.startSeq = null;
    this.marked = false;
    this.markTs = null;
    this.lastSeq = null;
    this.socket.on("disconnect", (reason) => this.disconnects.push(String(reason)));
    this.socket.on("csv_update", (data) => {
      this.lastSeq = data.seq;
    });
    const engine = this.socket.io.engine;
    engine.on("upgrade", () => {
      this.upgraded = true;
    });
    this.socket.onAny(() => {
      if (engine.transport.name !== "polling") return;
      this.onPolling += 1;
      if (kind === "late_upgrade" && this.onPolling === LATE_UPGRADE_AFTER) this.probe();
    });
  }

  // engine.io-client 6.6 (pinned by package-lock.json) starts an upgrade with _probe; with
  // `upgrade: false` it never does so on its own.
  probe() {
    const engine = this.socket.io.engine;
    if (typeof engine._probe !== "function") {
      this.connectErrors.push("engine.io-client has no _probe: the late upgrade cannot start");
      return;
    }
    engine._probe("websocket");
  }

  async open(what) {
    try {
      await connected(this.socket, what);
      const page = await this.ask("fetch_csv", { limit: 1 });
      if (page) this.startSeq = page.seq;
      const numbers = await this.ask("numbers", { limit: 1 });
      if (numbers) {
        this.marked = true;
        this.markTs = numbers.numbers.length ? numbers.numbers[numbers.numbers.length - 1].ts : null;
      }
    } catch (err) {
      this.connectErrors.push(err.message);
    }
    if (this.startSeq === null || !this.marked) this.connectErrors.push(`${what}: no first page or numbers mark`);
    if (this.chatty && this.startSeq !== null) this.chatter = this.chat();
  }

  async ask(event, payload) {
    try {
      const ack = await ask(this.socket, event, payload);
      this.acks += 1;
      if (!isObject(ack) || ack.ok !== true) {
        this.ackErrors.push(`${event}: ${JSON.stringify(ack)}`);
        return null;
      }
      return ack;
    } catch (err) {
      this.ackErrors.push(`${event}: ${err.message}`);
      return null;
    }
  }

  async chat() {
    for (let turn = 0; !this.stopping; turn += 1) {
      if (turn % 2) {
        const ack = await this.ask("ping", {});
        if (ack && !isInt(ack.ts)) this.ackErrors.push(`ping: ${JSON.stringify(ack)}`);
      } else {
        const since = this.lastSeq ?? this.startSeq;
        const ack = await this.ask("fetch_csv", { since, limit: 10_000 });
        // Acked changes after `since`: consecutive, ending at the acked seq.
        const good =
          ack === null ||
          (Array.isArray(ack.changes) &&
            ack.seq === since + ack.changes.length &&
            ack.changes.every((change, i) => change.seq === since + 1 + i));
        if (!good) this.ackErrors.push(`fetch_csv since ${since}: ${JSON.stringify(ack).slice(0, 300)}`);
      }
      await sleep(CHAT_PAUSE_MS);
    }
  }

  async stop() {
    this.stopping = true;
    await this.chatter;
  }

  csvUpdates() {
    return this.socket.events("csv_update");
  }

  transport() {
    return this.socket.io.engine?.transport?.name ?? null;
  }

  // Holds the draw stamped `ts`, or joined when it was already the newest one.
  hasDraw(ts) {
    if (this.markTs !== null && this.markTs >= ts) return true;
    return this.socket.events("random_number").some((draw) => draw.ts >= ts);
  }

  faults(final, stored, history, editors) {
    const updates = this.csvUpdates();
    const transport = this.transport();
    let wrongTransport = transport === FINAL_TRANSPORT[this.kind] ? 0 : 1;
    // A late upgrade must really have carried broadcasts over polling first, then websocket.
    if (this.kind === "late_upgrade" && (!this.upgraded || this.onPolling < LATE_UPGRADE_AFTER)) {
      wrongTransport = 1;
    }
    return {
      ...seqFaults(
        updates.map((update) => update.seq),
        (this.startSeq ?? final) + 1,
        final,
      ),
      corrupt: updates.filter((update) => !isDeepStrictEqual(update, history.get(update.seq))).length,
      ...drawFaults(this.socket.events("random_number"), this.markTs, stored),
      editor_order: editorOrderFaults(this.socket.seen, editors),
      ack_errors: this.ackErrors.length,
      disconnects: this.disconnects.length,
      connect_errors: this.connectErrors.length,
      wrong_transport: wrongTransport,
    };
  }
}

async function readLine() {
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line.trim()) {
      lines.close();
      return JSON.parse(line);
    }
  }
  throw new ScenarioError("stdin closed before the final state arrived");
}

async function waitUntil(condition, deadline) {
  while (!condition() && Date.now() < deadline) await sleep(20);
  return condition();
}

function selfTest() {
  let cases = 0;
  const same = (actual, expected, what) => {
    cases += 1;
    check(isDeepStrictEqual(actual, expected), what, actual);
  };
  const clean = { out_of_order: 0, duplicates: 0, gaps: 0, beyond: 0 };
  same(seqFaults([5, 6, 7, 8], 6, 8), clean, "clean run");
  same(seqFaults([3, 4, 5, 6, 7, 8], 6, 8), clean, "broadcasts from before the first page");
  same(seqFaults([5, 7, 6, 8], 6, 8).out_of_order, 1, "swap");
  same(seqFaults([5, 6, 6, 7, 8], 6, 8).duplicates, 1, "repeat");
  same(seqFaults([5, 6, 8], 6, 8).gaps, 1, "loss");
  same(seqFaults([5, 6, 7], 6, 8).gaps, 1, "lost tail");
  same(seqFaults([7, 8], 6, 8).gaps, 1, "lost first change after the page");
  same(seqFaults([], 6, 8).gaps, 3, "nothing");
  same(seqFaults([5, 6, 7, 8, 9], 6, 8).beyond, 1, "past the final seq");

  const stored = [0, 1, 2, 3, 4, 5].map((n) => ({ value: 50 + n, ts: 1000 + n }));
  const draws = (...seqs) => seqs.map((s) => ({ value: 50 + s - 20, ts: 1000 + s - 20, seq: s }));
  const cleanDraws = { random_out_of_order: 0, random_duplicates: 0, random_gaps: 0, random_corrupt: 0 };
  same(drawFaults(draws(22, 23, 24, 25), 1001, stored), cleanDraws, "clean draws");
  const newer = { value: 1, ts: 2000, seq: 26 };
  same(drawFaults([...draws(22, 23, 24, 25), newer], 1001, stored), cleanDraws, "a draw newer than the stored ones");
  same(drawFaults([], 1005, stored), cleanDraws, "joined after the last draw");
  same(drawFaults(draws(22, 24, 23, 25), 1001, stored).random_out_of_order, 1, "draw swap");
  same(drawFaults(draws(22, 23, 23, 24, 25), 1001, stored).random_duplicates, 1, "draw repeat");
  same(drawFaults(draws(22, 23, 25), 1001, stored).random_gaps, 1, "draw loss");
  same(drawFaults(draws(22, 23, 24), 1001, stored).random_gaps, 1, "newest draw lost");
  same(drawFaults(draws(23, 24, 25), 1001, stored).random_gaps, 1, "first draw after the mark lost");
  same(drawFaults([], 1001, stored).random_gaps, 4, "no draws");
  const wrong = [...draws(22, 23), { value: 0.5, ts: 1004, seq: 24 }, ...draws(25)];
  same(drawFaults(wrong, 1001, stored).random_corrupt, 1, "wrong value");

  const editors = { e: { toggle: 9, log: ["update:1:e-1", "lock:9:locked", "lock:9:unlocked", "update:1:e-2"] } };
  const update = (n) => ({
    event: "csv_update",
    data: { op: "update", by: "e", seq: n, row: { id: 1, values: { broker: `e-${n}` } } },
  });
  const lock = (state) => ({ event: "lock_status", data: { id: 9, state } });
  same(editorOrderFaults([update(1), lock("locked"), lock("unlocked"), update(2)], editors), 0, "editor order");
  same(editorOrderFaults([lock("unlocked"), update(2)], editors), 0, "joined late: a tail");
  same(editorOrderFaults([lock("locked"), update(2)], editors), 1, "lost unlock");
  same(editorOrderFaults([update(1), lock("unlocked"), lock("locked"), update(2)], editors), 1, "locks swapped");
  same(editorOrderFaults([update(1), lock("locked"), update(2), lock("unlocked")], editors), 1, "lock after update");
  return { cases };
}

async function scenario(track) {
  const url = env("TABLECAST_URL");
  const token = env("TABLECAST_TOKEN");
  const receivers = [];
  const opening = [];
  for (let wave = 0; wave < WAVES; wave += 1) {
    if (wave > 0) await sleep(WAVE_MS);
    KINDS.forEach((kind, k) => {
      const receiver = new Receiver(url, token, kind, (wave + k) % 2 === 1, track);
      receivers.push(receiver);
      opening.push(receiver.open(`${kind} socket of wave ${wave}`));
    });
  }
  await Promise.all(opening);
  const lateUpgrades = receivers.filter((r) => r.kind === "late_upgrade");
  await waitUntil(() => lateUpgrades.every((r) => r.upgraded), Date.now() + FINAL_WAIT_MS);
  process.stdout.write(`${JSON.stringify({ ready: true, sockets: receivers.length })}\n`);

  const final = await readLine();
  check(isInt(final.final_seq) && isInt(final.since) && isObject(final.editors), "final state line", final);
  const deadline = Date.now() + FINAL_WAIT_MS;
  await waitUntil(() => receivers.every((r) => (r.lastSeq ?? -1) >= final.final_seq), deadline);
  await Promise.all(receivers.map((r) => r.stop()));

  const reader = receivers.find((r) => r.socket.connected);
  check(reader !== undefined, "no socket is still connected");
  const past = await ask(reader.socket, "fetch_csv", { since: final.since, limit: 10_000 });
  check(past.ok === true && Array.isArray(past.changes), "history since the start", past);
  const history = new Map(past.changes.map((change) => [change.seq, change]));
  const numbers = await ask(reader.socket, "numbers", { limit: 10_000 });
  check(numbers.ok === true && Array.isArray(numbers.numbers), "stored draws", numbers);
  const stored = numbers.numbers;
  if (stored.length) {
    const endTs = stored[stored.length - 1].ts;
    await waitUntil(() => receivers.every((r) => r.hasDraw(endTs)), Date.now() + FINAL_WAIT_MS);
  }

  const kinds = {};
  const examples = [];
  for (const r of receivers) {
    const faults = r.faults(final.final_seq, stored, history, final.editors);
    const sum = (kinds[r.kind] ??= { receivers: 0, csv_updates: 0, random_numbers: 0, acks: 0, on_polling: 0 });
    sum.receivers += 1;
    sum.csv_updates += r.csvUpdates().length;
    sum.random_numbers += r.socket.events("random_number").length;
    sum.acks += r.acks;
    sum.on_polling += r.onPolling;
    for (const name of FAULTS) sum[name] = (sum[name] ?? 0) + faults[name];
    if (FAULTS.some((name) => faults[name]) && examples.length < 5) {
      examples.push({
        kind: r.kind,
        chatty: r.chatty,
        start_seq: r.startSeq,
        transport: r.transport(),
        faults: Object.fromEntries(FAULTS.filter((name) => faults[name]).map((name) => [name, faults[name]])),
        seqs_tail: r.csvUpdates().slice(-8).map((u) => u.seq),
        errors: [...r.ackErrors, ...r.connectErrors, ...r.disconnects].slice(0, 3),
      });
    }
  }
  const transports = Object.fromEntries(
    KINDS.map((kind) => [kind, receivers.filter((r) => r.kind === kind).map((r) => r.transport())]),
  );
  const result = { final_seq: final.final_seq, stored_draws: stored.length, kinds, transports };
  if (examples.length) throw new ScenarioError(`faults: ${JSON.stringify({ ...result, examples })}`);
  return result;
}

run("fanout_receivers", TOTAL_MS, process.env.TABLECAST_SELF_TEST ? async () => selfTest() : scenario);
