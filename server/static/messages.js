// Turning error acks and numbers into words a person reads.

export function seconds(s) {
  const n = Math.max(0, Math.ceil(s));
  if (n < 60) return `${n} s`;
  const m = Math.floor(n / 60);
  if (m < 60) return `${m} min ${String(n % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

export function countdown(ms) {
  const n = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(n / 60);
  if (m >= 60) return `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(n % 60).padStart(2, "0")}`;
  return `${m}:${String(n % 60).padStart(2, "0")}`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(ms) {
  const d = new Date(ms);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

export function showValue(v) {
  if (v === null || v === undefined) return "";
  return String(v);
}

function valuesText(values) {
  return Object.entries(values || {})
    .map(([k, v]) => `${k} = ${v === null ? "(empty)" : JSON.stringify(v)}`)
    .join(", ");
}

// `ctx`: {row, action, now} - which row and what the person was doing.
export function describe(error, ctx = {}) {
  const row = ctx.row != null ? `Row ${ctx.row}` : "This row";
  const now = ctx.now ?? Date.now();
  const e = error || {};
  switch (e.code) {
    case "unauthorized":
      return "Your session has ended or the password is wrong. Please log in again.";
    case "invalid_input":
      return `That input was not accepted${e.field ? ` (${e.field})` : ""}: ${e.message}.`;
    case "not_found":
      return ctx.row != null ? `${row} no longer exists; someone deleted it.` : `Not found: ${e.message}.`;
    case "username_taken":
      return "That username is already taken. Choose another one, or log in with it.";
    case "locked": {
      const left = e.expires_at ? ` (their lock ends in ${seconds((e.expires_at - now) / 1000)})` : "";
      if (ctx.action === "restore") return `Cannot restore while ${e.owner} holds a lock${left}. Ask them to finish first.`;
      return `${row} is locked by ${e.owner}${left}. Try again when they are done.`;
    }
    case "cooldown":
      return `${row} was just edited. You can lock it again in ${seconds(e.retry_after)}.`;
    case "lock_required":
      return `You no longer hold the lock on ${row.toLowerCase()} (it may have expired). Press Edit to take it again.`;
    case "not_owner":
      return `${row} is locked by someone else; only they can unlock it.`;
    case "conflict":
      return `Someone changed ${row.toLowerCase()} first. Their values: ${valuesText(e.row?.values)}. Press Enter to save yours over theirs, or Escape to keep theirs.`;
    case "payload_too_large":
      return `That is too much text${e.field ? ` for ${e.field}` : ""}: ${e.message}.`;
    case "rate_limited":
      return `Too many actions at once. Retry in ${seconds(e.retry_after)}.`;
    case "unavailable":
      return "The server could not save right now (storage problem). Nothing was changed; try again shortly.";
    case "internal":
      return "Something went wrong on the server. Nothing was changed.";
    case "timeout":
      return "The server did not answer in time. Check the connection and try again.";
    default:
      return e.message || "Something went wrong.";
  }
}
