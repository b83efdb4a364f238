// Keeps one upstream's tools fresh without letting the upstream drive the bus: however many
// notifications/tools/list_changed it sends, at most one refresh is in flight and one pending, and refreshes start
// at most `perSecond` times a second. A storm of 100k notifications costs a handful of tools/list requests.
export interface RefresherOptions {
  perSecond: number;
  now?: () => number;
}

export class CoalescedRefresh {
  private running: Promise<void> | undefined;
  private pending = false;
  private lastStart = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly now: () => number;

  constructor(
    private readonly refresh: () => Promise<void>,
    private readonly opts: RefresherOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Asks for a refresh: it starts now, or after the one in flight, or when the rate allows. */
  request(): void {
    if (this.stopped) return;
    if (this.running || this.timer) {
      this.pending = true;
      return;
    }
    const gap = 1000 / this.opts.perSecond - (this.now() - this.lastStart);
    if (gap > 0) {
      this.pending = true;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.startPending();
      }, gap);
      this.timer.unref?.();
      return;
    }
    this.start();
  }

  /** Runs a refresh now and waits for it (used at connect, when the catalog is needed before listening). */
  async runNow(): Promise<void> {
    if (this.running) await this.running;
    this.start();
    await this.running;
  }

  private startPending(): void {
    if (!this.pending || this.stopped) return;
    this.pending = false;
    this.request();
  }

  private start(): void {
    this.lastStart = this.now();
    this.running = this.refresh()
      .catch(() => {})
      .finally(() => {
        this.running = undefined;
        this.startPending();
      });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}
