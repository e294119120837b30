// Shared helpers for the Socket.IO client scenarios: bounded waits, checks that fail with a
// clear message, and the single JSON result line each scenario prints on success.

import { io } from "socket.io-client";

export const WAIT_MS = 10_000;

export class ScenarioError extends Error {}

export function env(name, { required = true } = {}) {
  const value = process.env[name];
  if (required && (value === undefined || value === "")) {
    throw new ScenarioError(`environment variable ${name} is not set`);
  }
  return value;
}

export function check(condition, message, actual) {
  if (!condition) {
    const suffix = actual === undefined ? "" : `; actual: ${JSON.stringify(actual)}`;
    throw new ScenarioError(`${message}${suffix}`);
  }
}

export function isInt(value) {
  return Number.isInteger(value);
}

export function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function sameKeys(value, keys) {
  return isObject(value) && JSON.stringify(Object.keys(value).sort()) === JSON.stringify([...keys].sort());
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioError(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A socket that records every server->client event, so a scenario can wait for one that
// arrived before it started waiting.
export function openSocket(url, options) {
  const socket = io(url, { reconnection: false, timeout: WAIT_MS, forceNew: true, ...options });
  const seen = [];
  const waiters = new Set();
  socket.onAny((event, ...args) => {
    seen.push({ event, data: args[0] });
    for (const waiter of [...waiters]) waiter();
  });
  socket.seen = seen;
  socket.events = (event) => seen.filter((item) => item.event === event).map((item) => item.data);
  socket.waitFor = (event, predicate = () => true, ms = WAIT_MS) => {
    let look;
    const found = new Promise((resolve) => {
      look = () => {
        const hit = seen.find((item) => item.event === event && predicate(item.data));
        if (hit) {
          waiters.delete(look);
          resolve(hit.data);
        }
      };
      waiters.add(look);
      look();
    });
    return withTimeout(found, ms, `event ${event}`).catch((err) => {
      waiters.delete(look);
      const recent = seen.slice(-5).map((item) => item.event);
      throw new ScenarioError(`${err.message} (last events: ${JSON.stringify(recent)})`);
    });
  };
  return socket;
}

export function connected(socket, what) {
  return withTimeout(
    new Promise((resolve, reject) => {
      if (socket.connected) {
        resolve();
        return;
      }
      socket.once("connect", resolve);
      socket.once("connect_error", (err) =>
        reject(new ScenarioError(`${what}: connect_error ${err.message} ${JSON.stringify(err.data ?? null)}`)),
      );
    }),
    WAIT_MS,
    `${what} to connect`,
  );
}

export async function ask(socket, event, ...args) {
  try {
    return await socket.timeout(WAIT_MS).emitWithAck(event, ...args);
  } catch (err) {
    throw new ScenarioError(`no ack for ${event} within ${WAIT_MS} ms (${err.message})`);
  }
}

export function expectOk(ack, event) {
  check(isObject(ack) && ack.ok === true, `${event} was not acked ok`, ack);
  return ack;
}

export function expectError(ack, event, code) {
  check(isObject(ack) && ack.ok === false, `${event} should be acked ok:false`, ack);
  check(isObject(ack.error), `${event}: ack has no error object`, ack);
  check(typeof ack.error.message === "string" && ack.error.message.length > 0, `${event}: error.message`, ack);
  check(ack.error.code === code, `${event}: expected error.code ${code}`, ack);
  return ack.error;
}

// Runs a scenario: prints its result as one JSON line and exits 0, or prints the failure to
// stderr and exits 1. The whole scenario is bounded by `totalMs`.
export function run(name, totalMs, scenario) {
  const sockets = [];
  const track = (socket) => {
    sockets.push(socket);
    return socket;
  };
  withTimeout(scenario(track), totalMs, `scenario ${name} to finish`)
    .then((result) => {
      process.stdout.write(`${JSON.stringify({ scenario: name, ok: true, ...result })}\n`);
      process.exitCode = 0;
    })
    .catch((err) => {
      const message = err instanceof ScenarioError ? err.message : err?.stack ?? String(err);
      process.stderr.write(`${name}: FAILED: ${message}\n`);
      process.exitCode = 1;
    })
    .finally(() => {
      for (const socket of sockets) socket.close();
      // A socket left half-open must not keep the process alive.
      setTimeout(() => process.exit(process.exitCode ?? 1), 200).unref();
    });
}
