// The table: pages fetched on demand for the rows in view (virtual scrolling), csv_update
// deltas applied in seq order, lock badges with live countdowns, and row editing.

import { countdown, describe, seconds, showValue } from "./messages.js";

const PAGE = 100; // rows per fetch_csv page
const ROW_H = 34; // px, matches --row-h
const HEAD_H = 40; // px, matches .grid-head
const MAX_SCROLL_PX = 15_000_000; // below every browser's element height limit
const KEEP_PAGES = 16; // cached pages; the farthest from view are dropped
const WIDTH = { id: 70, actions: 250, integer: 110, number: 130, text: 170 };
// Below this grid width the id and actions columns shrink; both stay pinned on the left.
const COMPACT_BELOW = 640;
const COMPACT = { id: 52, actions: 172 };

const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export class TableView {
  constructor({ grid, head, spacer, layer, meta, call, notify, confirm, now }) {
    Object.assign(this, { grid, head, spacer, layer, meta, call, notify, confirm, now });
    this.me = null;
    this.stats = { fetches: 0, rowsFetched: 0 };
    this.reset();
    this.rowEls = new Map();
    this.renderQueued = false;
    this.fetchTimer = null;
    grid.addEventListener("scroll", () => {
      this.scheduleRender();
      clearTimeout(this.fetchTimer);
      this.fetchTimer = setTimeout(() => this.ensureVisible(), 60);
    });
    new ResizeObserver(() => {
      this.layoutColumns();
      this.scheduleRender();
      this.ensureVisible();
    }).observe(grid);
    layer.addEventListener("click", (ev) => this.onClick(ev));
    layer.addEventListener("keydown", (ev) => this.onKey(ev));
    setInterval(() => this.tick(), 500);
  }

  reset() {
    this.gen = (this.gen || 0) + 1; // answers from an older generation are dropped
    this.columns = [];
    this.total = 0;
    this.totalSeq = -1;
    this.seq = null; // last table change applied
    this.pages = new Map(); // page index -> {rows, seq, stale}
    this.inflight = new Set();
    this.locks = new Map(); // row id -> {state, owner, expires_at}
    this.editing = null; // {id, version, original}
    this.syncing = false;
    this.queue = [];
    this.flashIds = new Set();
  }

  // ---- loading and syncing ---------------------------------------------------------

  firstPage() {
    return Math.floor(this.viewport().first / PAGE);
  }

  async reload() {
    const editing = this.editing;
    this.reset();
    if (editing) this.call("unlock_row", { id: editing.id });
    this.layer.replaceChildren();
    this.rowEls.clear();
    const ack = await this.fetchPage(0, { initial: true });
    if (ack && ack.ok && this.grid.scrollTop > 0) await this.ensureVisible();
    return ack;
  }

  adoptPage(ack, k) {
    if (JSON.stringify(ack.columns) !== JSON.stringify(this.columns)) {
      this.columns = ack.columns;
      this.renderHead();
    }
    if (ack.seq >= this.totalSeq) {
      this.total = ack.total;
      this.totalSeq = ack.seq;
    }
    this.pages.set(k, { rows: ack.rows, seq: ack.seq, stale: false });
  }

  adoptSnapshot(ack) {
    this.seq = ack.seq;
    this.locks = new Map(ack.locks.map((l) => [l.id, l]));
  }

  async fetchPage(k, { initial = false } = {}) {
    if (this.inflight.has(k)) return null;
    const gen = this.gen;
    this.inflight.add(k);
    this.stats.fetches += 1;
    let ack;
    try {
      ack = await this.call("fetch_csv", { offset: k * PAGE, limit: PAGE });
    } finally {
      if (gen === this.gen) this.inflight.delete(k);
    }
    if (gen !== this.gen) return null;
    if (!ack.ok) {
      this.notify(describe(ack.error));
      return ack;
    }
    this.stats.rowsFetched += ack.rows.length;
    this.adoptPage(ack, k);
    if (initial || this.seq === null) this.adoptSnapshot(ack);
    this.evict();
    this.scheduleRender();
    return ack;
  }

  async ensureVisible() {
    if (this.seq === null || this.syncing) return;
    const { first, count } = this.viewport();
    const from = Math.max(0, Math.floor((first - 5) / PAGE));
    const to = Math.min(Math.floor(Math.max(0, this.total - 1) / PAGE), Math.floor((first + count + 5) / PAGE));
    const wanted = [];
    for (let k = from; k <= to; k++) {
      const page = this.pages.get(k);
      if (!page || page.stale) wanted.push(k);
    }
    await Promise.all(wanted.map((k) => this.fetchPage(k)));
  }

  evict() {
    if (this.pages.size <= KEEP_PAGES) return;
    const here = this.firstPage();
    const editPage = this.editing ? this.pageOf(this.editing.id) : null;
    const order = [...this.pages.keys()].sort((a, b) => Math.abs(b - here) - Math.abs(a - here));
    for (const k of order) {
      if (this.pages.size <= KEEP_PAGES) break;
      if (k !== editPage) this.pages.delete(k);
    }
  }

  // A gap in seq, or a reconnect: ask for what was missed with `since`.
  async resync() {
    if (this.seq === null) return this.reload();
    if (this.syncing) return null;
    this.syncing = true;
    const gen = this.gen;
    const k = this.firstPage();
    let ack;
    try {
      ack = await this.call("fetch_csv", { since: this.seq, offset: k * PAGE, limit: PAGE });
    } catch (err) {
      ack = { ok: false, error: { code: "timeout" } };
    }
    if (gen !== this.gen) return null;
    this.syncing = false;
    if (!ack.ok) {
      this.notify(describe(ack.error));
      setTimeout(() => this.resync(), 2000);
      return ack;
    }
    if (ack.reset) {
      const queued = this.queue;
      const editing = this.editing;
      this.reset();
      if (editing) this.call("unlock_row", { id: editing.id });
      this.adoptPage(ack, k);
      this.adoptSnapshot(ack);
      this.queue = queued;
    } else {
      for (const change of ack.changes) {
        if (change.seq <= this.seq) continue;
        if (change.op === "reset") return this.reload();
        this.apply(change);
      }
      if (ack.seq > this.seq) this.seq = ack.seq;
    }
    const queued = this.queue.sort((a, b) => a.seq - b.seq);
    this.queue = [];
    for (const change of queued) this.onUpdate(change);
    this.scheduleRender();
    this.ensureVisible();
    return ack;
  }

  async refreshLocks() {
    const ack = await this.call("fetch_csv", { offset: 0, limit: 1 });
    if (ack.ok) {
      this.locks = new Map(ack.locks.map((l) => [l.id, l]));
      if (this.editing) {
        const lock = this.locks.get(this.editing.id);
        if (!lock || lock.owner !== this.me || lock.state !== "locked") this.dropEdit("Your lock ended while the connection was down; your changes were not saved.");
      }
      this.scheduleRender();
    }
  }

  // ---- broadcasts --------------------------------------------------------------------

  onUpdate(change) {
    if (this.seq === null) return; // the first page will include it
    if (this.syncing) {
      this.queue.push(change);
      return;
    }
    if (change.seq <= this.seq) return;
    if (change.op === "reset") {
      this.notify(`${change.by} restored a backup; the table was reloaded.`, "info");
      this.reload();
      return;
    }
    if (change.seq > this.seq + 1) {
      this.queue.push(change);
      this.resync();
      return;
    }
    this.apply(change);
    this.scheduleRender();
    this.ensureVisible();
  }

  apply(change) {
    this.seq = change.seq;
    const fresh = [...this.pages.entries()].filter(([, p]) => p.seq < change.seq).sort((a, b) => a[0] - b[0]);
    if (change.op === "update") {
      const row = change.row;
      for (const [, page] of fresh) {
        const i = page.rows.findIndex((r) => r.id === row.id);
        if (i >= 0) page.rows[i] = row;
      }
      this.flash(row.id);
      if (this.editing && this.editing.id === row.id && change.by !== this.me) {
        this.notify(`${change.by} changed row ${row.id} while you were editing it.`);
      }
    } else if (change.op === "add") {
      if (change.seq > this.totalSeq) {
        this.total += 1;
        this.totalSeq = change.seq;
      }
      const index = this.total - 1;
      const k = Math.floor(index / PAGE);
      for (const [pk, page] of fresh) {
        if (pk !== k || page.rows.some((r) => r.id === change.row.id)) continue;
        if (page.rows.length === index - k * PAGE) page.rows.push(change.row);
        else page.stale = true;
      }
      this.flash(change.row.id);
    } else if (change.op === "delete") {
      if (change.seq > this.totalSeq) {
        this.total -= 1;
        this.totalSeq = change.seq;
      }
      let shifted = false;
      for (const [pk, page] of fresh) {
        if (shifted) {
          this.pages.delete(pk);
          continue;
        }
        const i = page.rows.findIndex((r) => r.id === change.id);
        if (i >= 0) {
          page.rows.splice(i, 1);
          page.stale = true;
          shifted = true;
        } else if (page.rows.length && page.rows[0].id > change.id) {
          this.pages.delete(pk);
          shifted = true;
        }
      }
      if (this.editing && this.editing.id === change.id) this.dropEdit(`${change.by} deleted row ${change.id}.`);
    }
  }

  onLock(status) {
    if (status.state === "unlocked") this.locks.delete(status.id);
    else this.locks.set(status.id, { id: status.id, state: status.state, owner: status.owner, expires_at: status.expires_at });
    if (this.editing && this.editing.id === status.id && !(status.state === "locked" && status.owner === this.me)) {
      const why = { expired: "Your lock expired", restored: "A backup was restored", disconnected: "Your lock ended" }[status.reason];
      if (why) this.dropEdit(`${why}; your changes to row ${status.id} were not saved.`);
    }
    this.scheduleRender();
  }

  flash(id) {
    this.flashIds.add(id);
  }

  // ---- geometry and rendering ------------------------------------------------------

  viewport() {
    const clientH = Math.max(ROW_H, this.grid.clientHeight - HEAD_H);
    const full = this.total * ROW_H;
    const virt = Math.min(full, MAX_SCROLL_PX);
    const maxScroll = Math.max(0, virt - clientH);
    const top = Math.min(this.grid.scrollTop, maxScroll);
    const eff = full > virt && maxScroll > 0 ? (top * (full - clientH)) / maxScroll : top;
    const first = Math.max(0, Math.floor(eff / ROW_H));
    return { first, offset: eff - first * ROW_H, top, count: Math.ceil(clientH / ROW_H) + 1, virt };
  }

  scrollToIndex(index) {
    const clientH = Math.max(ROW_H, this.grid.clientHeight - HEAD_H);
    const full = this.total * ROW_H;
    const virt = Math.min(full, MAX_SCROLL_PX);
    const maxScroll = Math.max(0, virt - clientH);
    const eff = Math.max(0, index * ROW_H - clientH / 2);
    this.grid.scrollTop = full > virt ? (eff * maxScroll) / (full - clientH) : eff;
    this.scheduleRender();
    this.ensureVisible();
  }

  layoutColumns() {
    const compact = this.grid.clientWidth < COMPACT_BELOW;
    if (compact !== this.compact) {
      this.compact = compact;
      this.grid.classList.toggle("compact", compact);
      this.tick();
    }
    const pinned = compact ? COMPACT : WIDTH;
    const widths = [pinned.id, pinned.actions, ...this.columns.slice(1).map((c) => WIDTH[c.type] || WIDTH.text)];
    const sum = widths.reduce((a, b) => a + b, 0);
    const avail = this.grid.clientWidth;
    const last = widths.length - 1;
    if (sum < avail) widths[last] += avail - sum;
    this.width = Math.max(sum, avail);
    this.grid.style.setProperty("--cols", widths.map((w) => `${w}px`).join(" "));
    this.grid.style.setProperty("--id-w", `${pinned.id}px`);
    this.grid.style.setProperty("--pinned-w", `${pinned.id + pinned.actions}px`);
    this.layer.style.width = `${this.width}px`;
  }

  renderHead() {
    this.layoutColumns();
    const cells = [`<div role="columnheader">id<span class="type">integer</span></div>`, `<div role="columnheader">lock</div>`];
    for (const c of this.columns.slice(1)) {
      cells.push(`<div role="columnheader" title="${escapeHtml(c.name)} (${c.type})" data-col="${escapeHtml(c.name)}">${escapeHtml(c.name)}<span class="type">${c.type}</span></div>`);
    }
    this.head.innerHTML = cells.join("");
    this.rowEls.clear();
    this.layer.replaceChildren();
  }

  scheduleRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  rowAt(index) {
    const page = this.pages.get(Math.floor(index / PAGE));
    return page ? page.rows[index % PAGE] : undefined;
  }

  findRow(id) {
    for (const page of this.pages.values()) {
      const row = page.rows.find((r) => r.id === id);
      if (row) return row;
    }
    return null;
  }

  pageOf(id) {
    for (const [k, page] of this.pages) if (page.rows.some((r) => r.id === id)) return k;
    return null;
  }

  replaceRow(row) {
    for (const page of this.pages.values()) {
      const i = page.rows.findIndex((r) => r.id === row.id);
      if (i >= 0 && page.rows[i].version <= row.version) page.rows[i] = row;
    }
  }

  render() {
    const { first, offset, top, count, virt } = this.viewport();
    this.spacer.style.height = `${virt}px`;
    this.layer.style.height = `${virt}px`;
    this.meta.textContent = this.seq === null ? "loading…" : `${this.total.toLocaleString()} rows · seq ${this.seq}`;
    const used = new Set();
    const last = Math.min(this.total, first + count + 1);
    for (let i = first; i < last; i++) {
      const row = this.rowAt(i);
      const key = row ? `r${row.id}` : `p${i}`;
      used.add(key);
      const sig = row ? this.signature(row) : "placeholder";
      let el = this.rowEls.get(key);
      const keepEditor = el && this.editing && row && this.editing.id === row.id && el.classList.contains("editing");
      if (!el || (el.dataset.sig !== sig && !keepEditor)) {
        const fresh = this.buildRow(row, i);
        if (el) el.replaceWith(fresh);
        else this.layer.append(fresh);
        el = fresh;
        el.dataset.sig = sig;
        this.rowEls.set(key, el);
        if (row && this.flashIds.has(row.id)) el.classList.add("flash");
      }
      if (keepEditor) this.updateActions(el, row);
      el.style.top = `${top - offset + (i - first) * ROW_H}px`;
      el.setAttribute("aria-rowindex", String(i + 1));
    }
    this.flashIds.clear();
    for (const [key, el] of this.rowEls) {
      if (!used.has(key)) {
        if (el.contains(document.activeElement)) this.grid.focus({ preventScroll: true });
        el.remove();
        this.rowEls.delete(key);
      }
    }
    this.tick();
  }

  signature(row) {
    const lock = this.locks.get(row.id);
    const editing = this.editing && this.editing.id === row.id ? "e" : "";
    return `${row.version}|${lock ? `${lock.state}:${lock.owner}:${lock.expires_at}` : ""}|${editing}`;
  }

  lockBadge(id) {
    const lock = this.locks.get(id);
    if (!lock) return "";
    if (lock.state === "cooldown") {
      return `<span class="badge cool" data-cooldown="${lock.expires_at}" title="Edited by ${escapeHtml(lock.owner || "someone")}; locking is paused">cooldown</span>`;
    }
    const mine = lock.owner === this.me;
    const who = mine ? "you" : `locked by ${escapeHtml(lock.owner)}`;
    return `<span class="badge ${mine ? "mine" : "lock"}" data-expires="${lock.expires_at}" data-who="${who}" title="Lock held by ${escapeHtml(lock.owner)}">${who}</span>`;
  }

  buildRow(row, index) {
    const el = document.createElement("div");
    el.className = "grid-row";
    el.setAttribute("role", "row");
    if (!row) {
      el.classList.add("placeholder");
      el.innerHTML = `<div role="gridcell">…</div><div role="gridcell"></div>` + this.columns.slice(1).map(() => `<div role="gridcell">loading…</div>`).join("");
      return el;
    }
    el.dataset.rowId = String(row.id);
    const lock = this.locks.get(row.id);
    if (lock) el.classList.add(lock.state === "cooldown" ? "cooldown" : lock.owner === this.me ? "mine" : "locked");
    const editing = this.editing && this.editing.id === row.id;
    const cells = [`<div role="gridcell" class="num">${row.id}</div>`];
    if (editing) {
      el.classList.add("editing");
      cells.push(`<div role="gridcell" class="actions"><button class="btn small primary" data-action="save" data-id="${row.id}">Save</button><button class="btn small" data-action="cancel" data-id="${row.id}">Cancel</button>${this.lockBadge(row.id)}</div>`);
      for (const c of this.columns.slice(1)) {
        const v = row.values[c.name];
        const type = c.type === "text" ? "text" : "number";
        const step = c.type === "integer" ? "1" : "any";
        cells.push(
          `<div role="gridcell"><input data-col="${escapeHtml(c.name)}" data-type="${c.type}" type="${type}"${type === "number" ? ` step="${step}"` : ""} value="${escapeHtml(showValue(v))}" aria-label="${escapeHtml(c.name)}"></div>`,
        );
      }
    } else {
      cells.push(`<div role="gridcell" class="actions"><button class="btn small" data-action="edit" data-id="${row.id}" aria-label="Edit row ${row.id}">Edit</button><button class="btn small" data-action="delete" data-id="${row.id}" aria-label="Delete row ${row.id}">Delete</button>${this.lockBadge(row.id)}</div>`);
      for (const c of this.columns.slice(1)) {
        const v = row.values[c.name];
        const cls = [c.type === "text" ? "" : "num", v === null || v === undefined ? "null" : ""].join(" ").trim();
        const text = v === null || v === undefined ? "—" : escapeHtml(v);
        cells.push(`<div role="gridcell" class="${cls}" data-col="${escapeHtml(c.name)}" title="${escapeHtml(showValue(v))}">${text}</div>`);
      }
    }
    el.innerHTML = cells.join("");
    return el;
  }

  updateActions(el, row) {
    const badge = el.querySelector(".badge");
    const html = this.lockBadge(row.id);
    if (badge && html) badge.outerHTML = html;
  }

  tick() {
    const now = this.now();
    // A narrow window shows the time first, so the ellipsis cuts the name instead; the row's
    // colour and its Save button already say a lock is yours.
    for (const el of this.layer.querySelectorAll("[data-expires]")) {
      const left = Number(el.dataset.expires) - now;
      const time = left > 0 ? countdown(left) : "ending…";
      if (!this.compact) el.textContent = `${el.dataset.who} · ${time}`;
      else el.textContent = el.dataset.who === "you" ? time : `${time} · ${el.dataset.who}`;
    }
    for (const el of this.layer.querySelectorAll("[data-cooldown]")) {
      const left = Number(el.dataset.cooldown) - now;
      const time = left > 0 ? seconds(left / 1000) : "ending…";
      el.textContent = this.compact ? `${time} · cooldown` : `cooldown ${time}`;
    }
  }

  // ---- editing -----------------------------------------------------------------------

  onClick(ev) {
    const btn = ev.target.closest("button[data-action]");
    if (!btn) return;
    const id = Number(btn.dataset.id);
    const action = btn.dataset.action;
    if (action === "edit") this.startEdit(id);
    else if (action === "delete") this.remove(id);
    else if (action === "save") this.save();
    else if (action === "cancel") this.cancel();
  }

  onKey(ev) {
    if (!this.editing || !ev.target.matches("input")) return;
    if (ev.key === "Enter") {
      ev.preventDefault();
      this.save();
    } else if (ev.key === "Escape") {
      ev.preventDefault();
      this.cancel();
    }
  }

  async startEdit(id) {
    if (this.editing && this.editing.id === id) return;
    if (this.editing) await this.cancel();
    const ack = await this.call("lock_row", { id });
    if (!ack.ok) {
      this.notify(describe(ack.error, { row: id, now: this.now() }));
      return;
    }
    const row = this.findRow(id);
    if (!row) {
      this.call("unlock_row", { id });
      return;
    }
    this.notify(null);
    this.locks.set(id, { id, state: "locked", owner: this.me, expires_at: ack.lock.expires_at });
    this.editing = { id, version: row.version, original: { ...row.values } };
    this.render();
    const input = this.layer.querySelector(`.grid-row[data-row-id="${id}"] input`);
    if (input) input.focus();
  }

  readInputs() {
    const el = this.layer.querySelector(`.grid-row[data-row-id="${this.editing.id}"]`);
    if (!el) return { values: {}, bad: null };
    const values = {};
    for (const input of el.querySelectorAll("input[data-col]")) {
      const col = input.dataset.col;
      const raw = input.value.trim();
      let v;
      if (input.dataset.type === "text") v = input.value === "" ? null : input.value;
      else if (raw === "") v = null;
      else {
        v = Number(raw);
        if (!Number.isFinite(v) || (input.dataset.type === "integer" && !Number.isInteger(v))) {
          return { values, bad: `${col} needs ${input.dataset.type === "integer" ? "a whole number" : "a number"}` };
        }
      }
      const before = this.editing.original[col] ?? null;
      if (v !== before) values[col] = v;
    }
    return { values, bad: null };
  }

  async save() {
    const editing = this.editing;
    if (!editing) return;
    const { values, bad } = this.readInputs();
    if (bad) {
      this.notify(`Row ${editing.id}: ${bad}.`);
      return;
    }
    if (Object.keys(values).length === 0) {
      await this.cancel();
      return;
    }
    const ack = await this.call("update_csv", { id: editing.id, values, version: editing.version });
    if (this.editing !== editing) return;
    if (!ack.ok) {
      if (ack.error.code === "conflict" && ack.error.row) {
        this.takeTheirs(editing, ack.error.row);
      }
      this.notify(describe(ack.error, { row: editing.id, now: this.now() }));
      return;
    }
    this.replaceRow(ack.row);
    this.editing = null;
    this.notify(null);
    await this.call("unlock_row", { id: editing.id });
    this.render();
    this.grid.focus({ preventScroll: true });
  }

  // After a conflict: fields the person did not touch take the other values; theirs stay.
  takeTheirs(editing, current) {
    const el = this.layer.querySelector(`.grid-row[data-row-id="${editing.id}"]`);
    for (const input of el ? el.querySelectorAll("input[data-col]") : []) {
      const col = input.dataset.col;
      if (input.value === showValue(editing.original[col])) input.value = showValue(current.values[col]);
    }
    editing.version = current.version;
    editing.original = { ...current.values };
    this.replaceRow(current);
  }

  async cancel() {
    const editing = this.editing;
    if (!editing) return;
    this.editing = null;
    this.render();
    this.grid.focus({ preventScroll: true });
    const ack = await this.call("unlock_row", { id: editing.id });
    if (!ack.ok && ack.error.code !== "not_found") this.notify(describe(ack.error, { row: editing.id }));
  }

  dropEdit(message) {
    this.editing = null;
    this.notify(message);
    this.scheduleRender();
  }

  async remove(id) {
    const row = this.findRow(id);
    if (!(await this.confirm(`Delete row ${id}? Everyone will see it disappear.`, "Delete"))) return;
    const ack = await this.call("lock_row", { id });
    if (!ack.ok) {
      this.notify(describe(ack.error, { row: id, now: this.now() }));
      return;
    }
    const del = await this.call("delete_csv", row ? { id, version: row.version } : { id });
    if (!del.ok) {
      await this.call("unlock_row", { id });
      this.notify(describe(del.error, { row: id, now: this.now() }));
      return;
    }
    if (this.editing && this.editing.id === id) this.editing = null;
    this.notify(`Row ${id} deleted.`, "info");
  }

  async add(values) {
    const ack = await this.call("add_csv", { values });
    if (!ack.ok) return ack;
    this.notify(`Row ${ack.row.id} added.`, "info");
    setTimeout(() => this.scrollToIndex(this.total - 1), 50);
    return ack;
  }
}
