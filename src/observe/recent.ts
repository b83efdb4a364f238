// A small ring of recent notable calls (replays, joins, errors) for the dashboard. In-process only.
export interface RecentEvent {
  at: number;
  agent: string;
  tool: string;
  outcome: string;
  code?: string;
  durationMs: number;
}

export class RecentEvents {
  private readonly ring: RecentEvent[] = [];
  constructor(private readonly capacity = 200) {}
  push(e: RecentEvent): void {
    this.ring.push(e);
    if (this.ring.length > this.capacity) this.ring.shift();
  }
  list(): RecentEvent[] {
    return [...this.ring].reverse();
  }
}
