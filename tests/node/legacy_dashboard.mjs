// A client set up like the React dashboard written for the earlier backend: long-polling only,
// the token in an `Authorization: Bearer` header, `ohlc-stream` for 1m candles, `ohlc-data`
// for each closed candle, and the `random_number` stream.
//
// Env: TABLECAST_URL, TABLECAST_TOKEN; TABLECAST_CLOSE_WAIT_MS (default 75000) bounds the wait
// for a 1m candle to close.

import { ask, check, connected, env, expectOk, isInt, isObject, openSocket, run, sameKeys } from "./lib.mjs";

const CLOSE_WAIT_MS = Number(process.env.TABLECAST_CLOSE_WAIT_MS || 75_000);
const OHLC_KEYS = ["interval", "time", "open", "high", "low", "close", "ticks", "closed"];
const BAR_KEYS = ["time", "open", "high", "low", "close"];

function checkBar(bar, what) {
  check(isInt(bar.time) && bar.time % 60 === 0, `${what}: time is epoch seconds on a minute`, bar);
  check(bar.time > 1_500_000_000 && bar.time < 10_000_000_000, `${what}: time is in seconds, not ms`, bar);
  for (const key of ["open", "high", "low", "close"]) {
    check(typeof bar[key] === "number" && bar[key] >= 0 && bar[key] <= 100, `${what}: ${key} in 0..100`, bar);
  }
  check(bar.low <= Math.min(bar.open, bar.close), `${what}: low <= open, close`, bar);
  check(bar.high >= Math.max(bar.open, bar.close), `${what}: high >= open, close`, bar);
}

function checkCandle(candle, what) {
  check(sameKeys(candle, OHLC_KEYS), `${what}: keys ${OHLC_KEYS}`, candle);
  check(candle.interval === "1m", `${what}: interval 1m`, candle);
  check(isInt(candle.ticks) && candle.ticks >= 1, `${what}: ticks >= 1`, candle);
  check(typeof candle.closed === "boolean", `${what}: closed is a boolean`, candle);
  checkBar(candle, what);
}

function checkNumber(number) {
  check(sameKeys(number, ["value", "ts", "seq"]), "random_number is {value, ts, seq}", number);
  check(typeof number.value === "number" && number.value >= 0 && number.value <= 100, "value in 0..100", number);
  check(Math.abs(Math.round(number.value * 100) - number.value * 100) < 1e-6, "value has two decimals", number);
  check(isInt(number.ts) && Math.abs(number.ts - Date.now()) < 60_000, "ts is epoch ms near now", number);
  check(isInt(number.seq) && number.seq >= 1, "seq is a positive integer", number);
}

run("legacy_dashboard", CLOSE_WAIT_MS + 30_000, async (track) => {
  const url = env("TABLECAST_URL");
  const socket = track(
    openSocket(url, {
      transports: ["polling"],
      extraHeaders: { Authorization: `Bearer ${env("TABLECAST_TOKEN")}` },
    }),
  );
  await connected(socket, "dashboard client");
  check(socket.io.engine.transport.name === "polling", "transport is polling", socket.io.engine.transport.name);

  const subscribed = expectOk(await ask(socket, "ohlc-stream"), "ohlc-stream");
  check(Array.isArray(subscribed.candles), "ohlc-stream ack has a candles array", subscribed);
  for (const candle of subscribed.candles) {
    checkCandle(candle, "history candle");
    check(candle.closed === true, "history candles are closed", candle);
  }

  // random_number: a few consecutive draws
  await socket.waitFor("random_number", () => socket.events("random_number").length >= 3);
  const numbers = socket.events("random_number").slice(0, 3);
  numbers.forEach(checkNumber);
  for (let i = 1; i < numbers.length; i += 1) {
    check(numbers[i].seq === numbers[i - 1].seq + 1, "draws arrive with consecutive seq", numbers);
    check(numbers[i].ts >= numbers[i - 1].ts, "draw timestamps do not go back", numbers);
  }

  // live 1m candles
  const live = await socket.waitFor("ohlc", (c) => c.interval === "1m" && c.closed === false);
  checkCandle(live, "live ohlc");
  const intervals = [...new Set(socket.events("ohlc").map((c) => c.interval))];
  check(intervals.length === 1 && intervals[0] === "1m", "ohlc-stream delivers only 1m candles", intervals);

  // a closed candle: `ohlc-data` and the matching closed `ohlc`
  const waitStarted = Date.now();
  const bar = await socket.waitFor("ohlc-data", () => true, CLOSE_WAIT_MS);
  const closeWaitMs = Date.now() - waitStarted;
  check(sameKeys(bar, BAR_KEYS), `ohlc-data is {${BAR_KEYS}}`, bar);
  checkBar(bar, "ohlc-data");
  const closed = await socket.waitFor("ohlc", (c) => c.interval === "1m" && c.closed === true && c.time === bar.time);
  checkCandle(closed, "closed ohlc");
  for (const key of BAR_KEYS) {
    check(closed[key] === bar[key], `ohlc-data ${key} matches the closed ohlc candle`, { bar, closed });
  }
  const next = await socket.waitFor("ohlc", (c) => c.interval === "1m" && c.time === bar.time + 60);
  check(next.closed === false, "the next candle starts open", next);

  return {
    transport: socket.io.engine.transport.name,
    history: subscribed.candles.length,
    numbers,
    live,
    ohlc_data: bar,
    closed_candle: closed,
    next_candle: next,
    ohlc_intervals: intervals,
    close_wait_ms: closeWaitMs,
    ohlc_data_count: socket.events("ohlc-data").length,
    random_count: socket.events("random_number").length,
  };
});
