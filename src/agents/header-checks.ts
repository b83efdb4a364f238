// SEP-2243: a 2026-07-28 request mirrors parts of its body in HTTP headers (`Mcp-Method`, `Mcp-Name`, and for each
// tool argument its schema marks with `x-mcp-header`, an `Mcp-Param-{Name}` header) so that proxies and gateways can
// route without reading the body. toolbus refuses a request whose headers disagree with its body (HTTP 400, -32020),
// since a component in front that trusted the header would act on something else than the upstream does; and it
// sends those headers on the requests it forwards to a 2026-07-28 upstream.
//
// The revision requires them: a 2026-07-28 request without `Mcp-Method`, or without `Mcp-Name` or an `Mcp-Param-*`
// header while its body carries the value, is refused like a disagreeing one.
import type { IncomingHttpHeaders } from 'node:http';
import { atPath, decodeParamValue, type HeaderDeclaration, primitiveText } from '../catalog/mcp-param-headers.js';
import { HEADER_MISMATCH } from './modern-envelope.js';

export interface HeaderRefusal {
  status: 400;
  code: number;
  message: string;
  data: { mismatch: { header: string; body: string } };
}

function refuse(header: string, body: string, why: string): HeaderRefusal {
  return {
    status: 400,
    code: HEADER_MISMATCH,
    message: `Header mismatch: ${why}`,
    data: { mismatch: { header, body } },
  };
}

function one(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return (Array.isArray(v) ? v.join(',') : v)?.trim();
}

/** What names the request's target in `Mcp-Name`, per method. */
export function nameOf(method: string, params: Record<string, unknown> | undefined): unknown {
  if (method === 'tools/call' || method === 'prompts/get') return params?.name;
  if (method === 'resources/read') return params?.uri;
  return undefined;
}

/**
 * Why a 2026-07-28 request's headers disagree with its body, or null. `decls` are the called tool's `x-mcp-header`
 * declarations (tools/call only).
 */
export function headerRefusal(
  headers: IncomingHttpHeaders,
  method: string,
  params: Record<string, unknown> | undefined,
  decls: readonly HeaderDeclaration[],
): HeaderRefusal | null {
  const m = one(headers, 'mcp-method');
  if (m === undefined) return refuse('Mcp-Method', method, 'the Mcp-Method header is absent');
  if (m !== method)
    return refuse(
      'Mcp-Method',
      method,
      `the Mcp-Method header names ${m.slice(0, 100)}, the body ${method.slice(0, 100)}`,
    );
  const raw = one(headers, 'mcp-name');
  const name = nameOf(method, params);
  if (raw === undefined && typeof name === 'string')
    return refuse('Mcp-Name', name, 'the body names a target but the Mcp-Name header is absent');
  if (raw !== undefined && typeof name === 'string') {
    const decoded = decodeParamValue(raw);
    if (decoded === undefined) return refuse('Mcp-Name', name, 'the Mcp-Name header is not valid Base64');
    if (decoded !== name) return refuse('Mcp-Name', name, 'the Mcp-Name header names another target than the body');
  }
  const args = params?.arguments;
  for (const d of decls) {
    const body = atPath(args, d.path);
    const text = primitiveText(body);
    if (text === undefined) continue;
    const header = `Mcp-Param-${d.header}`;
    const got = one(headers, header.toLowerCase());
    if (got === undefined) return refuse(header, text, `the body carries ${d.path.join('.')} but ${header} is absent`);
    const decoded = decodeParamValue(got);
    if (decoded === undefined) return refuse(header, text, `${header} is not valid Base64`);
    const numeric = (d.type === 'number' || d.type === 'integer') && typeof body === 'number';
    if (numeric ? Number(decoded) !== body || decoded.trim() === '' : decoded !== text)
      return refuse(header, text, `${header} disagrees with ${d.path.join('.')} in the body`);
  }
  return null;
}
