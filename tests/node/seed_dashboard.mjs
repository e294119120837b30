// The BlackRose dashboard's own calls, replayed exactly as its React + socket.io-client +
// lightweight-charts frontend makes them against the backend Tablecast replaces:
//
// - `POST /auth/login` `{username, password}`, reading `response.data.access_token` (there is
//   no `refresh_token`); on a 401, `POST /auth/refresh`, and a logout when that fails too;
// - `GET /record/` with `Authorization: Bearer T`: a JSON array of flat records, paged on the
//   client;
// - Socket.IO with `extraHeaders: {Authorization: "Bearer T"}` over polling (one build) and
//   websocket (another), both at once; on connect `socket.emit("ohlc-stream", {message})` with
//   no ack callback, then every `ohlc-data` bar goes to the chart.
//
// Env: TABLECAST_URL, TABLECAST_USER, TABLECAST_PASSWORD; TABLECAST_CLOSE_WAIT_MS (default
// 75000) bounds the wait for a 1m candle to close.

import { check, connected, env, isInt, isObject, openSocket, run, sameKeys } from "./lib.mjs";

const CLOSE_WAIT_MS = Number(process.env.TABLECAST_CLOSE_WAIT_MS || 75_000);
const PAGE_SIZE = 10; // the dashboard's table page
const BAR_KEYS = ["time", "open", "high", "low", "close"];
const AXIOS_HEADERS = { Accept: "application/json, text/plain, */*" };

// What axios hands the dashboard: the status and the parsed body.
async function request(url, method, { token, body } = {}) {
  const headers = { ...AXIOS_HEADERS };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const response = await fetch(url, { method, headers, body: payload });
  const text = await response.text();
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error(`${method} ${url}: not JSON (${response.status}): ${text.slice(0, 200)}`);
  }
  return { status: response.status, type: response.headers.get("content-type"), data };
}

// The dashboard's 401 handling: try a refresh, log out when it fails.
async function onUnauthorized(url, session) {
  const refresh = await request(`${url}/auth/refresh`, "POST", { body: {} });
  if (refresh.status === 401) session.token = null;
  return refresh;
}

function checkBar(bar, what) {
  check(sameKeys(bar, BAR_KEYS), `${what}: keys ${BAR_KEYS}`, bar);
  check(isInt(bar.time) && bar.time % 60 === 0, `${what}: time is epoch seconds on a minute`, bar);
  check(bar.time > 1_500_000_000 && bar.time < 10_000_000_000, `${what}: time in seconds, not ms`, bar);
  for (const key of ["open", "high", "low", "close"]) {
    check(typeof bar[key] === "number" && Number.isFinite(bar[key]), `${what}: ${key} is a number`, bar);
  }
  check(bar.low <= Math.min(bar.open, bar.close), `${what}: low <= open, close`, bar);
  check(bar.high >= Math.max(bar.open, bar.close), `${what}: high >= open, close`, bar);
}

// One dashboard build: connect, ask for the stream on connect (no ack), chart every bar.
async function chart(url, token, transport, track) {
  const socket = track(
    openSocket(url, { transports: [transport], extraHeaders: { Authorization: `Bearer ${token}` } }),
  );
  const chartBars = [];
  socket.on("connect", () => socket.emit("ohlc-stream", { message: "Start streaming OHLC data" }));
  socket.on("ohlc-data", (bar) => chartBars.push(bar)); // series.update(bar)
  await connected(socket, `${transport} dashboard`);
  check(socket.io.engine.transport.name === transport, `transport is ${transport}`, socket.io.engine.transport.name);
  // The live 1m candles show the subscription took, long before the first bar closes.
  const live = await socket.waitFor("ohlc", (c) => c.interval === "1m");
  const waitStarted = Date.now();
  const bar = await socket.waitFor("ohlc-data", () => true, CLOSE_WAIT_MS);
  checkBar(bar, `${transport} ohlc-data`);
  check(bar.time + 60 <= Date.now() / 1000 + 1, `${transport}: the bar's minute is over`, bar);
  const closed = await socket.waitFor("ohlc", (c) => c.interval === "1m" && c.closed && c.time === bar.time);
  for (const key of BAR_KEYS) {
    check(closed[key] === bar[key], `${transport}: the bar matches the closed candle`, { bar, closed });
  }
  const intervals = [...new Set(socket.events("ohlc").map((c) => c.interval))];
  check(intervals.length === 1 && intervals[0] === "1m", `${transport}: only 1m candles`, intervals);
  return {
    transport: socket.io.engine.transport.name,
    live_interval: live.interval,
    bar,
    chart_bars: chartBars.length,
    close_wait_ms: Date.now() - waitStarted,
  };
}

run("seed_dashboard", CLOSE_WAIT_MS + 30_000, async (track) => {
  const url = env("TABLECAST_URL");
  const username = env("TABLECAST_USER");
  const password = env("TABLECAST_PASSWORD");
  const session = { token: null };

  // Login page.
  const login = await request(`${url}/auth/login`, "POST", { body: { username, password } });
  check(login.status === 200, "POST /auth/login is 200", login);
  check(typeof login.data.access_token === "string" && login.data.access_token, "access_token", login.data);
  check(login.data.refresh_token === undefined, "no refresh_token (the dashboard ignores it)", login.data);
  session.token = login.data.access_token;

  // A wrong password: 401, the refresh fails, the dashboard logs out.
  const wrong = await request(`${url}/auth/login`, "POST", { body: { username, password: `${password}-wrong` } });
  check(wrong.status === 401 && wrong.data.error?.code === "unauthorized", "wrong password is 401", wrong);
  const stale = { token: "expired-token" };
  const refusedRecords = await request(`${url}/record/`, "GET", { token: stale.token });
  check(refusedRecords.status === 401, "GET /record/ with a bad token is 401", refusedRecords);
  const refresh = await onUnauthorized(url, stale);
  check(refresh.status === 401 && refresh.data.error?.code === "unauthorized", "refresh is 401", refresh);
  check(stale.token === null, "the dashboard logged out", stale);

  // Table page.
  const table = await request(`${url}/record/`, "GET", { token: session.token });
  check(table.status === 200, "GET /record/ is 200", table);
  check(table.type?.startsWith("application/json"), "GET /record/ is JSON", table.type);
  const records = table.data;
  check(Array.isArray(records) && records.length > 0, "a non-empty JSON array", records);
  const keys = Object.keys(records[0]);
  check(keys[0] === "id", "id comes first", keys);
  for (const record of records) {
    check(isObject(record) && sameKeys(record, keys), "every record has every column", record);
    check(isInt(record.id), "id is an integer", record);
  }
  const pages = [];
  for (let at = 0; at < records.length; at += PAGE_SIZE) pages.push(records.slice(at, at + PAGE_SIZE));

  // Chart: two builds at once, so a single candle close serves both.
  const [polling, websocket] = await Promise.all([
    chart(url, session.token, "polling", track),
    chart(url, session.token, "websocket", track),
  ]);

  return {
    login_keys: Object.keys(login.data).sort(),
    wrong_password: wrong.data.error,
    refresh: { status: refresh.status, error: refresh.data.error },
    record_keys: keys,
    records,
    pages: pages.length,
    polling,
    websocket,
  };
});
