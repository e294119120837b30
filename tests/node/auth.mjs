// Connection-time authentication as socket.io-client sees it: a bad or revoked token is
// refused with `connect_error` whose `err.data` is `{code: "unauthorized", message}`; a socket
// without a token is a guest that may `ping` but gets `unauthorized` for table events and no
// broadcasts.
//
// Env: TABLECAST_URL, TABLECAST_REVOKED_TOKEN (a token that was logged out);
// TABLECAST_GUEST_QUIET_MS (default 1500): how long the guest listens for broadcasts.

import {
  ScenarioError,
  WAIT_MS,
  ask,
  check,
  connected,
  env,
  expectError,
  expectOk,
  isInt,
  openSocket,
  run,
  sameKeys,
  withTimeout,
} from "./lib.mjs";

const GUEST_QUIET_MS = Number(process.env.TABLECAST_GUEST_QUIET_MS || 1500);

function refusal(socket, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", () => reject(new ScenarioError(`${what}: connected, expected connect_error`)));
      socket.once("connect_error", (err) => resolve(err));
    }),
    WAIT_MS,
    `${what}: connect_error`,
  );
}

function checkRefusal(err, what) {
  check(err instanceof Error, `${what}: connect_error gives an Error`, String(err));
  check(sameKeys(err.data, ["code", "message"]), `${what}: err.data is {code, message}`, err.data);
  check(err.data.code === "unauthorized", `${what}: err.data.code`, err.data);
  check(typeof err.data.message === "string" && err.data.message.length > 0, `${what}: err.data.message`, err.data);
  return { message: err.message, data: err.data };
}

run("auth", 45_000, async (track) => {
  const url = env("TABLECAST_URL");
  const results = {};

  const cases = {
    garbage_auth: { auth: { token: "not-a-jwt" }, transports: ["websocket"] },
    forged_auth: {
      auth: {
        token:
          "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJtYWxsb3J5IiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDAsImp0aSI6ImZvcmdlZCJ9.c2lnbmF0dXJlLW5vdC12YWxpZA",
      },
      transports: ["websocket"],
    },
    bad_header_polling: { extraHeaders: { Authorization: "Bearer not-a-jwt" }, transports: ["polling"] },
    bad_query: { query: { token: "not-a-jwt" }, transports: ["websocket"] },
    revoked_auth: { auth: { token: env("TABLECAST_REVOKED_TOKEN") }, transports: ["websocket"] },
  };
  for (const [name, options] of Object.entries(cases)) {
    const socket = track(openSocket(url, options));
    results[name] = checkRefusal(await refusal(socket, name), name);
    check(!socket.connected, `${name}: socket stays disconnected`);
  }

  // guest
  const guest = track(openSocket(url, { transports: ["websocket"] }));
  await connected(guest, "guest");
  const before = Date.now();
  const pong = expectOk(await ask(guest, "ping", {}), "guest ping");
  check(sameKeys(pong, ["ok", "ts"]), "ping result is {ok, ts}", pong);
  check(isInt(pong.ts) && pong.ts >= before - 5_000 && pong.ts <= Date.now() + 5_000, "ping ts is server time in ms", pong);
  const fetchErr = expectError(await ask(guest, "fetch_csv", {}), "guest fetch_csv", "unauthorized");
  const lockErr = expectError(await ask(guest, "lock_row", { id: 1 }), "guest lock_row", "unauthorized");
  const streamErr = expectError(await ask(guest, "ohlc-stream"), "guest ohlc-stream", "unauthorized");
  await new Promise((resolve) => setTimeout(resolve, GUEST_QUIET_MS));
  const broadcasts = guest.seen.map((item) => item.event);
  check(broadcasts.length === 0, "a guest receives no broadcasts", broadcasts);
  check(guest.connected, "the guest is still connected");

  return {
    refused: results,
    guest: {
      ping: pong,
      fetch_csv: fetchErr,
      lock_row: lockErr,
      ohlc_stream: streamErr,
      broadcasts,
    },
  };
});
