// The live random number and its candlestick chart (lightweight-charts, vendored).

export const INTERVALS = ["1s", "5s", "15s", "1m", "5m", "15m", "1h"];
const SECONDS = { "1s": 1, "5s": 5, "15s": 15, "1m": 60, "5m": 300, "15m": 900, "1h": 3600 };

export class LiveChart {
  constructor({ container, picker, valueEl, call, notify, describe }) {
    Object.assign(this, { container, picker, valueEl, call, notify, describe });
    this.interval = sessionStorage.getItem("tablecast.interval") || "1s";
    if (!INTERVALS.includes(this.interval)) this.interval = "1s";
    this.subscribed = null;
    this.lastTime = null;
    this.bars = 0;
    this.lastValue = null;
    const LC = window.LightweightCharts;
    this.chart = LC.createChart(container, {
      autoSize: true,
      layout: { background: { type: LC.ColorType.Solid, color: "#ffffff" }, textColor: "#3b4455", fontFamily: "system-ui, 'DejaVu Sans', sans-serif" },
      grid: { vertLines: { color: "#f0f2f6" }, horzLines: { color: "#f0f2f6" } },
      rightPriceScale: { borderColor: "#dde2ea" },
      timeScale: { borderColor: "#dde2ea", timeVisible: true, secondsVisible: true, barSpacing: 8, rightOffset: 4 },
    });
    this.series = this.chart.addSeries(LC.CandlestickSeries, {
      upColor: "#1d9a5b",
      downColor: "#d2443a",
      borderVisible: false,
      wickUpColor: "#1d9a5b",
      wickDownColor: "#d2443a",
      priceFormat: { type: "price", precision: 2, minMove: 0.01 },
    });
    this.buildPicker();
  }

  buildPicker() {
    this.picker.replaceChildren();
    for (const name of INTERVALS) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = name;
      b.dataset.interval = name;
      b.setAttribute("role", "radio");
      b.addEventListener("click", () => this.select(name));
      this.picker.append(b);
    }
    this.picker.addEventListener("keydown", (ev) => {
      const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[ev.key];
      if (!step) return;
      ev.preventDefault();
      const next = INTERVALS[(INTERVALS.indexOf(this.interval) + step + INTERVALS.length) % INTERVALS.length];
      this.select(next).then(() => this.picker.querySelector(`[data-interval="${next}"]`).focus());
    });
    this.markPicker();
  }

  markPicker() {
    for (const b of this.picker.querySelectorAll("button")) {
      const on = b.dataset.interval === this.interval;
      b.setAttribute("aria-checked", String(on));
      b.tabIndex = on ? 0 : -1;
    }
  }

  async select(interval) {
    if (interval === this.interval && this.subscribed === interval) return;
    this.interval = interval;
    sessionStorage.setItem("tablecast.interval", interval);
    this.markPicker();
    await this.subscribe();
  }

  // (Re)subscribe after a connect or an interval change: backfill, then live updates.
  async subscribe() {
    const interval = this.interval;
    if (this.subscribed && this.subscribed !== interval) {
      this.call("unsubscribe", { stream: "ohlc", interval: this.subscribed });
    }
    this.subscribed = interval;
    const ack = await this.call("subscribe", { stream: "ohlc", interval, history: 300 });
    if (interval !== this.interval) return;
    if (!ack.ok) {
      this.notify(this.describe(ack.error));
      return;
    }
    const candles = ack.candles.map(bar);
    this.series.setData(candles);
    this.bars = candles.length;
    this.lastTime = candles.length ? candles[candles.length - 1].time : null;
    this.chart.applyOptions({ timeScale: { secondsVisible: SECONDS[interval] < 60 } });
    this.chart.timeScale().scrollToRealTime();
    this.publish();
  }

  dropSubscription() {
    this.subscribed = null;
  }

  onCandle(c) {
    if (c.interval !== this.interval || this.subscribed !== this.interval) return;
    if (this.lastTime !== null && c.time < this.lastTime) return; // older than what is drawn
    if (this.lastTime === null || c.time > this.lastTime) this.bars += 1;
    this.series.update(bar(c));
    this.lastTime = c.time;
    this.publish();
  }

  onNumber(n) {
    const el = this.valueEl;
    el.textContent = n.value.toFixed(2);
    el.classList.toggle("up", this.lastValue !== null && n.value > this.lastValue);
    el.classList.toggle("down", this.lastValue !== null && n.value < this.lastValue);
    el.title = `draw #${n.seq} at ${new Date(n.ts).toLocaleTimeString()}`;
    this.lastValue = n.value;
  }

  publish() {
    this.container.dataset.bars = String(this.bars);
    this.container.dataset.interval = this.interval;
  }
}

function bar(c) {
  return { time: c.time, open: c.open, high: c.high, low: c.low, close: c.close };
}
