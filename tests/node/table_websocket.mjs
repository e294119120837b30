// Two users on the websocket transport, each authenticated with `auth: {token}`: fetch the
// page, lock, update with a version, see the broadcasts, contend for the lock, unlock, and
// get the error envelope for a bad payload and an unknown event.
//
// Env: TABLECAST_URL, TABLECAST_TOKEN_A, TABLECAST_USER_A, TABLECAST_TOKEN_B, TABLECAST_USER_B.

import {
  ask,
  check,
  connected,
  env,
  expectError,
  expectOk,
  isInt,
  isObject,
  openSocket,
  run,
  sameKeys,
} from "./lib.mjs";

const COLUMN_TYPES = new Set(["integer", "number", "text"]);

function checkPage(page) {
  check(sameKeys(page, ["ok", "columns", "rows", "total", "seq", "locks"]), "fetch_csv result keys", Object.keys(page));
  check(Array.isArray(page.columns) && page.columns.length >= 2, "columns is a non-trivial array", page.columns);
  for (const column of page.columns) {
    check(sameKeys(column, ["name", "type"]), "a column is {name, type}", column);
    check(typeof column.name === "string" && column.name.length > 0, "column name is a string", column);
    check(COLUMN_TYPES.has(column.type), "column type is integer|number|text", column);
  }
  check(page.columns[0].name === "id" && page.columns[0].type === "integer", "first column is integer id", page.columns[0]);
  check(Array.isArray(page.rows) && page.rows.length > 0, "rows is a non-empty array", page.rows);
  const names = page.columns.map((column) => column.name).filter((name) => name !== "id");
  for (const row of page.rows) {
    check(sameKeys(row, ["id", "version", "values"]), "a row is {id, version, values}", row);
    check(isInt(row.id) && row.id >= 1, "row id is a positive integer", row);
    check(isInt(row.version) && row.version >= 0 && row.version <= page.seq, "row version is an integer <= seq", row);
    check(isObject(row.values), "row values is an object", row);
    for (const name of names) {
      const value = row.values[name];
      check(
        value === null || typeof value === "string" || typeof value === "number",
        `row ${row.id} value of ${name} is a string, number or null`,
        row.values,
      );
    }
  }
  check(isInt(page.total) && page.total >= page.rows.length, "total is an integer >= rows on the page", page.total);
  check(isInt(page.seq) && page.seq >= 0, "seq is a non-negative integer", page.seq);
  check(Array.isArray(page.locks), "locks is an array", page.locks);
  for (const lock of page.locks) checkLockEntry(lock);
}

function checkLockEntry(lock) {
  check(sameKeys(lock, ["id", "state", "owner", "expires_at"]), "a page lock is {id, state, owner, expires_at}", lock);
  check(isInt(lock.id) && ["locked", "cooldown"].includes(lock.state), "page lock id/state", lock);
  check(typeof lock.owner === "string" && isInt(lock.expires_at), "page lock owner/expires_at", lock);
}

// A value of the column's type that differs from the current one.
function newValue(column, current) {
  if (column.type === "text") return `node-${Date.now()}`;
  const base = typeof current === "number" ? current : 0;
  return column.type === "integer" ? base + 7 : Math.round((base + 12.34) * 100) / 100;
}

run("table_websocket", 60_000, async (track) => {
  const url = env("TABLECAST_URL");
  const userA = env("TABLECAST_USER_A");
  const userB = env("TABLECAST_USER_B");
  const a = track(openSocket(url, { auth: { token: env("TABLECAST_TOKEN_A") }, transports: ["websocket"] }));
  const b = track(openSocket(url, { auth: { token: env("TABLECAST_TOKEN_B") }, transports: ["websocket"] }));
  await Promise.all([connected(a, "client A"), connected(b, "client B")]);
  check(a.io.engine.transport.name === "websocket", "client A transport", a.io.engine.transport.name);

  const page = expectOk(await ask(a, "fetch_csv", {}), "fetch_csv");
  checkPage(page);
  const locksBefore = page.locks.length;

  const target = page.rows.find((row) => !page.locks.some((lock) => lock.id === row.id));
  check(target !== undefined, "a row without a lock on the first page", page.locks);
  const column = page.columns.find((c) => c.name === "pnl") ?? page.columns.find((c) => c.name !== "id");
  const value = newValue(column, target.values[column.name]);

  // lock_row
  const startedAt = Date.now();
  const lockAck = expectOk(await ask(a, "lock_row", { id: target.id }), "lock_row");
  check(sameKeys(lockAck, ["ok", "lock"]), "lock_row result keys", lockAck);
  check(sameKeys(lockAck.lock, ["id", "owner", "expires_at"]), "lock is {id, owner, expires_at}", lockAck.lock);
  check(lockAck.lock.id === target.id && lockAck.lock.owner === userA, "lock id/owner", lockAck.lock);
  check(isInt(lockAck.lock.expires_at) && lockAck.lock.expires_at > startedAt, "lock expires_at in the future (ms)", lockAck.lock);
  const acquired = await a.waitFor("lock_status", (s) => s.id === target.id && s.reason === "acquired");
  check(
    acquired.state === "locked" && acquired.owner === userA && acquired.expires_at === lockAck.lock.expires_at,
    "lock_status for the acquired lock",
    acquired,
  );
  const pageLocked = expectOk(await ask(a, "fetch_csv", { limit: 1 }), "fetch_csv after lock");
  const listed = pageLocked.locks.find((lock) => lock.id === target.id);
  check(
    listed !== undefined && listed.state === "locked" && listed.owner === userA,
    "fetch_csv locks lists the held lock",
    pageLocked.locks,
  );

  // update_csv with version
  const updateAck = expectOk(
    await ask(a, "update_csv", { id: target.id, values: { [column.name]: value }, version: target.version }),
    "update_csv",
  );
  const row = updateAck.row;
  check(sameKeys(row, ["id", "version", "values"]) && row.id === target.id, "update_csv row", updateAck);
  check(row.values[column.name] === value, `updated ${column.name} is ${JSON.stringify(value)}`, row.values);
  check(row.version > page.seq, "updated row version is above the fetched seq", { version: row.version, seq: page.seq });
  const update = await a.waitFor("csv_update", (u) => u.op === "update" && u.row?.id === target.id);
  check(update.seq === row.version, "csv_update seq equals the new row version", update);
  check(update.by === userA, "csv_update by is the editor", update);
  check(isInt(update.ts) && update.ts >= startedAt, "csv_update ts in epoch ms", update);
  check(JSON.stringify(update.row) === JSON.stringify(row), "csv_update row equals the ack row", update);
  check(
    isObject(update.before) && update.before[column.name] === target.values[column.name],
    "csv_update before carries the old value",
    update.before,
  );
  const seenByB = await b.waitFor("csv_update", (u) => u.op === "update" && u.seq === update.seq);
  check(JSON.stringify(seenByB) === JSON.stringify(update), "the other user sees the same csv_update", seenByB);

  // stale version
  const stale = expectError(
    await ask(a, "update_csv", { id: target.id, values: { [column.name]: value }, version: target.version }),
    "update_csv with a stale version",
    "conflict",
  );
  check(isObject(stale.row) && stale.row.version === row.version, "conflict carries the current row", stale);

  // the other user tries the same row
  const lockedErr = expectError(await ask(b, "lock_row", { id: target.id }), "lock_row by user B", "locked");
  check(lockedErr.owner === userA, "locked error names the owner", lockedErr);
  check(lockedErr.expires_at === lockAck.lock.expires_at, "locked error carries expires_at", lockedErr);
  const notOwner = expectError(await ask(b, "unlock_row", { id: target.id }), "unlock_row by user B", "not_owner");

  // unlock: after an edit the row cools down
  const unlockAck = expectOk(await ask(a, "unlock_row", { id: target.id }), "unlock_row");
  check(sameKeys(unlockAck, ["ok"]), "unlock_row result is {ok}", unlockAck);
  const released = await a.waitFor("lock_status", (s) => s.id === target.id && s.reason === "released");
  check(released.state === "cooldown" && released.owner === userA, "lock_status after unlock of an edited row", released);
  check(isInt(released.expires_at) && released.expires_at > Date.now(), "cooldown expires_at in the future", released);
  const cooling = expectError(await ask(b, "lock_row", { id: target.id }), "lock_row during cooldown", "cooldown");
  check(typeof cooling.retry_after === "number" && cooling.retry_after > 0, "cooldown retry_after", cooling);

  // bad payloads
  const badType = expectError(await ask(a, "lock_row", { id: "one" }), "lock_row with a string id", "invalid_input");
  check(badType.field === "id", "invalid_input names the field id", badType);
  const unknownField = expectError(
    await ask(a, "fetch_csv", { offset: 0, colour: "red" }),
    "fetch_csv with an unknown field",
    "invalid_input",
  );
  check(unknownField.field === "colour", "invalid_input names the unknown field", unknownField);
  const negative = expectError(await ask(a, "fetch_csv", { offset: -1 }), "fetch_csv offset -1", "invalid_input");
  check(negative.field === "offset", "invalid_input names offset", negative);

  // unknown event
  const unknown = await ask(a, "no_such_event", {});
  check(isObject(unknown) && unknown.ok === false && isObject(unknown.error), "unknown event acked ok:false", unknown);
  check(typeof unknown.error.code === "string" && typeof unknown.error.message === "string", "unknown event error", unknown);

  const pageAfter = expectOk(await ask(b, "fetch_csv", {}), "fetch_csv after the scenario");
  checkPage(pageAfter);
  const rowAfter = pageAfter.rows.find((r) => r.id === target.id);
  check(JSON.stringify(rowAfter) === JSON.stringify(row), "user B fetches the updated row", rowAfter);

  return {
    transport: a.io.engine.transport.name,
    columns: page.columns,
    total: page.total,
    seq_before: page.seq,
    seq_after: pageAfter.seq,
    locks_before: locksBefore,
    row_id: target.id,
    column: column.name,
    value,
    lock: lockAck.lock,
    updated_row: row,
    csv_update: update,
    conflict: stale,
    locked: lockedErr,
    not_owner: notOwner,
    released,
    cooldown: cooling,
    invalid_input: [badType, unknownField, negative],
    unknown_event: unknown,
    page_after_locks: pageAfter.locks,
  };
});
