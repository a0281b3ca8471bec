// Events per second over windows of at least a second, rolled as events come: reading it changes nothing.
export class RateWindow {
  private window = { at: performance.now(), count: 0, rate: 0 };
  private count = 0;

  /** One more event, at the monotonic time `now`. */
  add(now = performance.now()): void {
    this.count++;
    if (now - this.window.at >= 1000) this.window = { at: now, count: this.count, rate: (this.count - this.window.count) / ((now - this.window.at) / 1000) };
  }

  /** The last window's rate; once no event came for two seconds, the rate since that window. */
  rate(now = performance.now()): number {
    const since = now - this.window.at;
    return since < 2000 ? this.window.rate : (this.count - this.window.count) / (since / 1000);
  }
}
