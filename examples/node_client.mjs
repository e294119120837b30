// Log in, fetch a page, lock a row, edit it, unlock it, and print the broadcasts seen.
//
//   npm ci --prefix examples
//   node examples/node_client.mjs [url] [user] [row]
import { io } from "socket.io-client";

const url = process.argv[2] ?? "http://127.0.0.1:8000";
const username = process.argv[3] ?? "example_js";
const rowId = Number(process.argv[4] ?? 2);

const login = await fetch(`${url}/api/login`, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ username, password: "example-password" }),
}).then((r) => r.json());
if (!login.ok) {
  console.error("login failed:", login.error.message);
  process.exit(1);
}

const socket = io(url, { auth: { token: login.access_token }, transports: ["websocket"], reconnection: false });
const seen = [];
socket.on("csv_update", (data) => seen.push(["csv_update", data]));
socket.on("lock_status", (data) => seen.push(["lock_status", data]));
socket.on("connect_error", (err) => {
  console.error("connect refused:", err.data ?? err.message);
  process.exit(1);
});
await new Promise((resolve) => socket.once("connect", resolve));

const ask = (event, payload) => socket.timeout(10000).emitWithAck(event, payload);
try {
  const page = await ask("fetch_csv", { offset: rowId - 1, limit: 1 });
  const row = page.rows[0];
  console.log("fetched", JSON.stringify(row));
  const lock = await ask("lock_row", { id: row.id });
  if (!lock.ok) throw new Error(`cannot lock: ${lock.error.message}`);
  console.log("locked until", lock.lock.expires_at);
  const column = page.columns.find((c) => c.type === "number").name;
  const edit = await ask("update_csv", { id: row.id, values: { [column]: 67.89 }, version: row.version });
  if (!edit.ok) throw new Error(`edit refused: ${edit.error.message}`);
  console.log("saved", JSON.stringify(edit.row));
  await ask("unlock_row", { id: row.id });
  await new Promise((resolve) => setTimeout(resolve, 500));
} catch (err) {
  console.error(String(err));
  process.exitCode = 1;
} finally {
  socket.disconnect();
}
for (const [name, data] of seen) console.log("broadcast", name, JSON.stringify(data));
