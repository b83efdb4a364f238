// The 2026-07-28 revision's per-request envelope (SEP-2575): every request carries its protocol version and client
// capabilities in `_meta`, mirrored by the `MCP-Protocol-Version` header, and the methods of the stateful era are
// gone. A request that breaks the envelope is refused before anything runs, with the error code and HTTP status the
// revision assigns, so a 2026 client learns exactly what to fix.
import { LEGACY_VERSIONS, MODERN_VERSION, PROTOCOL_VERSION_META, SUPPORTED_VERSIONS } from './rpc.js';

export const CLIENT_CAPABILITIES_META = 'io.modelcontextprotocol/clientCapabilities';
export const HEADER_MISMATCH = -32020;
export const UNSUPPORTED_PROTOCOL_VERSION = -32022;

/** Methods a 2026-07-28 request may name; everything else (initialize, ping, logging/setLevel…) is not found. */
const MODERN_METHODS = new Set([
  'server/discover',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'subscriptions/listen',
  'tasks/get',
  'tasks/update',
  'tasks/cancel',
]);

export interface EnvelopeRefusal {
  status: 400 | 404;
  code: number;
  message: string;
  data?: Record<string, unknown>;
}

/**
 * Whether a request speaks the 2026-07-28 revision: it names `server/discover`, carries a protocol version in
 * `_meta`, or its `MCP-Protocol-Version` header is not one of the 2025-era revisions.
 */
export function isModernEnvelope(method: string, params: unknown, headerVersion: string | undefined): boolean {
  if (method === 'server/discover') return true;
  const meta = (params as { _meta?: unknown } | undefined)?._meta;
  if (meta !== null && typeof meta === 'object' && PROTOCOL_VERSION_META in meta) return true;
  return headerVersion !== undefined && !(LEGACY_VERSIONS as readonly string[]).includes(headerVersion);
}

/** Why a 2026-07-28 request is refused, or null when its envelope is sound. */
export function envelopeRefusal(
  method: string,
  params: unknown,
  headerVersion: string | undefined,
): EnvelopeRefusal | null {
  const meta = (params as { _meta?: unknown } | undefined)?._meta;
  if (meta === null || typeof meta !== 'object' || Array.isArray(meta))
    return { status: 400, code: -32602, message: 'Invalid params: a 2026-07-28 request needs _meta' };
  const m = meta as Record<string, unknown>;
  const version = m[PROTOCOL_VERSION_META];
  if (typeof version !== 'string')
    return { status: 400, code: -32602, message: `Invalid params: _meta needs ${PROTOCOL_VERSION_META}` };
  const caps = m[CLIENT_CAPABILITIES_META];
  if (caps === null || typeof caps !== 'object' || Array.isArray(caps))
    return { status: 400, code: -32602, message: `Invalid params: _meta needs ${CLIENT_CAPABILITIES_META}` };
  if (headerVersion !== undefined && headerVersion !== version) {
    return {
      status: 400,
      code: HEADER_MISMATCH,
      message: 'Header mismatch: MCP-Protocol-Version and _meta name different versions',
    };
  }
  if (version !== MODERN_VERSION) {
    return {
      status: 400,
      code: UNSUPPORTED_PROTOCOL_VERSION,
      message: `Unsupported protocol version ${version.slice(0, 64)}`,
      data: { supported: [...SUPPORTED_VERSIONS], requested: version.slice(0, 64) },
    };
  }
  if (!MODERN_METHODS.has(method))
    return { status: 404, code: -32601, message: `Method not found: ${method.slice(0, 100)}` };
  return null;
}
