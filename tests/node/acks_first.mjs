// Writes under fan-out: several editors on their own rows update back to back while many
// other sockets receive every change. For each editor, the ack of every update must arrive
// before the `csv_update` broadcast of that same change: an ack never waits behind the
// fan-out. socket.io-client runs ack callbacks and event handlers in arrival order, so the
// order they run in is the order the frames came in.
//
// Env: TABLECAST_URL, TABLECAST_TOKENS (JSON list: one per editor), TABLECAST_READER_TOKEN,
// TABLECAST_READERS, TABLECAST_UPDATES.

import { ask, check, connected, env, expectOk, openSocket, run } from "./lib.mjs";

const url = env("TABLECAST_URL");
const tokens = JSON.parse(env("TABLECAST_TOKENS"));
const readers = Number(env("TABLECAST_READERS"));
const updates = Number(env("TABLECAST_UPDATES"));

run("acks_first", 120_000, async (track) => {
  const others = [];
  for (let i = 0; i < readers; i++) {
    const socket = track(openSocket(url, { auth: { token: env("TABLECAST_READER_TOKEN") }, transports: ["websocket"] }));
    others.push(connected(socket, `reader ${i}`));
  }
  await Promise.all(others);

  const editors = tokens.map((token) => track(openSocket(url, { auth: { token }, transports: ["websocket"] })));
  await Promise.all(editors.map((socket, i) => connected(socket, `editor ${i}`)));
  const page = expectOk(await ask(editors[0], "fetch_csv", { limit: editors.length }), "fetch_csv");
  const rows = page.rows.map((row) => row.id);
  check(rows.length === editors.length, "one row per editor", rows);

  const outcome = await Promise.all(
    editors.map(async (socket, i) => {
      const id = rows[i];
      expectOk(await ask(socket, "lock_row", { id }), "lock_row");
      const order = [];
      socket.on("csv_update", (change) => {
        if (change.op === "update" && change.row.id === id) order.push(`bcast:${change.row.values.pnl}`);
      });
      for (let n = 0; n < updates; n++) {
        const ack = await new Promise((resolve) =>
          socket.emit("update_csv", { id, values: { pnl: n } }, (reply) => {
            order.push(`ack:${n}`);
            resolve(reply);
          }),
        );
        expectOk(ack, "update_csv");
      }
      // The last broadcast may still be on its way.
      await socket.waitFor("csv_update", (change) => change.row?.id === id && change.row.values.pnl === updates - 1);
      const misordered = [];
      for (let n = 0; n < updates; n++) {
        const ackAt = order.indexOf(`ack:${n}`);
        const bcastAt = order.indexOf(`bcast:${n}`);
        if (ackAt < 0 || bcastAt < 0 || ackAt > bcastAt) misordered.push({ n, ackAt, bcastAt });
      }
      return { id, misordered };
    }),
  );
  const misordered = outcome.flatMap((editor) => editor.misordered.map((item) => ({ id: editor.id, ...item })));
  check(misordered.length === 0, "every ack arrives before the broadcast of its change", misordered.slice(0, 10));
  return { editors: editors.length, readers, updates, misordered: misordered.length };
});
