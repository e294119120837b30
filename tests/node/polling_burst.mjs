// A long-polling socket.io-client emitting a burst without waiting: socket.io-client batches
// every emit queued while a POST is in flight into the next POST, so the server gets POSTs of
// many packets. Every emit must be acked.
//
// Env: TABLECAST_URL, TABLECAST_TOKEN, TABLECAST_EMITS.

import { ask, check, connected, env, openSocket, run } from "./lib.mjs";

const url = env("TABLECAST_URL");
const emits = Number(env("TABLECAST_EMITS"));

run("polling_burst", 60_000, async (track) => {
  const socket = track(openSocket(url, { auth: { token: env("TABLECAST_TOKEN") }, transports: ["polling"] }));
  await connected(socket, "polling socket");
  const acks = await Promise.all(
    Array.from({ length: emits }, (_, n) => ask(socket, n % 2 ? "ping" : "fetch_csv", n % 2 ? {} : { limit: 1 })),
  );
  const ok = acks.filter((ack) => ack && ack.ok === true).length;
  check(ok === emits, `all ${emits} emits acked ok`, acks.filter((ack) => !ack || ack.ok !== true).slice(0, 3));
  return { emits, acked: ok, transport: socket.io.engine.transport.name };
});
