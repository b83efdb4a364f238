// The example upstream: a ticketing system as a real MCP server (stdio) backed by its own SQLite file. It is the
// kind of system agents write to, and like most such systems it does nothing to protect itself from repeated or
// concurrent writes: create_ticket always inserts a new row. Keeping that safe is toolbus's job.
//
// Env: TICKETS_API_TOKEN (required: the credential toolbus injects), TICKETS_DB (default .toolbus/tickets.db),
// TICKETS_DELAY_MS (optional delay before each write, for demos of slow upstreams).
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { McpServer } from '@modelcontextprotocol/server';
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio';
import Database from 'better-sqlite3';
import { z } from 'zod';

if (!process.env.TICKETS_API_TOKEN) {
  process.stderr.write('tickets: TICKETS_API_TOKEN is not set; refusing to start\n');
  process.exit(2);
}

const dbPath = process.env.TICKETS_DB ?? '.toolbus/tickets.db';
mkdirSync(dirname(dbPath), { recursive: true });
const db = new Database(dbPath);
db.pragma('journal_mode = WAL');
db.pragma('busy_timeout = 5000');
db.exec(`CREATE TABLE IF NOT EXISTS tickets (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  title TEXT NOT NULL,
  priority TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open',
  source_issue TEXT,
  body TEXT,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);
CREATE TABLE IF NOT EXISTS comments (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ticket_id INTEGER NOT NULL REFERENCES tickets(id),
  text TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (datetime('now'))
);`);

const delayMs = Number(process.env.TICKETS_DELAY_MS ?? 0);
const pause = () => (delayMs > 0 ? new Promise((r) => setTimeout(r, delayMs)) : Promise.resolve());

interface Ticket {
  id: number;
  title: string;
  priority: string;
  status: string;
  source_issue: string | null;
  body: string | null;
  created_at: string;
}

const getTicket = db.prepare<[number], Ticket>('SELECT * FROM tickets WHERE id = ?');
const priority = z.enum(['low', 'normal', 'high', 'urgent']);
const status = z.enum(['open', 'in_progress', 'closed']);
const ticketShape = z.object({
  id: z.number().int(),
  title: z.string(),
  priority: z.string(),
  status: z.string(),
  source_issue: z.string().nullable(),
});

type Result = {
  content: { type: 'text'; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
};
const ok = (summary: string, data: Record<string, unknown>): Result => ({
  content: [{ type: 'text', text: summary }],
  structuredContent: data,
});
const notFound = (id: number): Result => ({
  content: [{ type: 'text', text: `No ticket with id ${id}.` }],
  isError: true,
});
const publicTicket = (t: Ticket) => ({
  id: t.id,
  title: t.title,
  priority: t.priority,
  status: t.status,
  source_issue: t.source_issue,
});

const server = new McpServer({ name: 'tickets', version: '1.0.0' });
const register = server.registerTool.bind(server) as unknown as (
  name: string,
  config: unknown,
  cb: (args: never) => Promise<Result>,
) => void;

register(
  'create_ticket',
  {
    description: 'Create a ticket. Each call creates a new ticket.',
    inputSchema: z.object({
      title: z.string().min(1).max(200),
      priority,
      source_issue: z.string().max(100).optional(),
      body: z.string().max(10_000).optional(),
    }),
    outputSchema: ticketShape,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false },
  },
  async (a: { title: string; priority: string; source_issue?: string; body?: string }) => {
    await pause();
    const info = db
      .prepare('INSERT INTO tickets (title, priority, source_issue, body) VALUES (?, ?, ?, ?)')
      .run(a.title, a.priority, a.source_issue ?? null, a.body ?? null);
    const t = getTicket.get(Number(info.lastInsertRowid))!;
    return ok(`Created ticket #${t.id}: ${t.title}`, publicTicket(t));
  },
);

register(
  'update_ticket',
  {
    description: 'Change the title, priority or status of a ticket.',
    inputSchema: z.object({
      id: z.number().int(),
      title: z.string().min(1).max(200).optional(),
      priority: priority.optional(),
      status: status.optional(),
    }),
    outputSchema: ticketShape,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true },
  },
  async (a: { id: number; title?: string; priority?: string; status?: string }) => {
    await pause();
    const t = getTicket.get(a.id);
    if (!t) return notFound(a.id);
    db.prepare('UPDATE tickets SET title = ?, priority = ?, status = ? WHERE id = ?').run(
      a.title ?? t.title,
      a.priority ?? t.priority,
      a.status ?? t.status,
      a.id,
    );
    const u = getTicket.get(a.id)!;
    return ok(`Updated ticket #${u.id}`, publicTicket(u));
  },
);

register(
  'add_comment',
  {
    description: 'Add a comment to a ticket. Each call adds a new comment.',
    inputSchema: z.object({ ticket_id: z.number().int(), text: z.string().min(1).max(10_000) }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false },
  },
  async (a: { ticket_id: number; text: string }) => {
    await pause();
    if (!getTicket.get(a.ticket_id)) return notFound(a.ticket_id);
    const info = db.prepare('INSERT INTO comments (ticket_id, text) VALUES (?, ?)').run(a.ticket_id, a.text);
    return ok(`Comment ${info.lastInsertRowid} added to ticket #${a.ticket_id}`, {
      comment_id: Number(info.lastInsertRowid),
      ticket_id: a.ticket_id,
    });
  },
);

register(
  'get_ticket',
  {
    description: 'Read one ticket with its comments.',
    inputSchema: z.object({ id: z.number().int() }),
    annotations: { readOnlyHint: true },
  },
  async (a: { id: number }) => {
    const t = getTicket.get(a.id);
    if (!t) return notFound(a.id);
    const comments = db.prepare('SELECT id, text, created_at FROM comments WHERE ticket_id = ? ORDER BY id').all(a.id);
    return ok(`#${t.id} [${t.status}/${t.priority}] ${t.title}`, {
      ...publicTicket(t),
      body: t.body,
      created_at: t.created_at,
      comments,
    });
  },
);

register(
  'list_tickets',
  {
    description: 'List tickets, newest first, optionally by status or source issue.',
    inputSchema: z.object({
      status: status.optional(),
      source_issue: z.string().optional(),
      limit: z.number().int().min(1).max(500).optional(),
    }),
    annotations: { readOnlyHint: true },
  },
  async (a: { status?: string; source_issue?: string; limit?: number }) => {
    const rows = db
      .prepare<[string | null, string | null, string | null, string | null, number], Ticket>(
        'SELECT * FROM tickets WHERE (? IS NULL OR status = ?) AND (? IS NULL OR source_issue = ?) ORDER BY id DESC LIMIT ?',
      )
      .all(a.status ?? null, a.status ?? null, a.source_issue ?? null, a.source_issue ?? null, a.limit ?? 100);
    return ok(rows.map((t) => `#${t.id} [${t.status}/${t.priority}] ${t.title}`).join('\n') || 'No tickets.', {
      tickets: rows.map(publicTicket),
    });
  },
);

server.registerResource(
  'summary',
  'tickets://summary',
  { description: 'Ticket counts by status', mimeType: 'application/json' },
  async (uri: URL) => {
    const counts = db.prepare('SELECT status, COUNT(*) AS n FROM tickets GROUP BY status').all();
    return { contents: [{ uri: uri.href, mimeType: 'application/json', text: JSON.stringify(counts) }] };
  },
);

(server.registerPrompt as unknown as (n: string, c: unknown, cb: (a: { topic: string }) => unknown) => void)(
  'triage',
  { description: 'Triage the open tickets about a topic', argsSchema: z.object({ topic: z.string() }) },
  ({ topic }) => ({
    messages: [
      {
        role: 'user',
        content: {
          type: 'text',
          text: `List the open tickets about ${topic} with tickets__list_tickets, then set priorities.`,
        },
      },
    ],
  }),
);

await server.connect(new StdioServerTransport());
process.stdin.on('close', () => {
  db.close();
  process.exit(0);
});
