// What authentication can say about a request: an agent, or one typed reason it was refused. The reasons are what a
// client may learn (RFC 6750 says to tell a client why its token failed); nothing else about the bus is revealed.
import type { AgentIdentity } from '../pipeline/context.js';

export type AuthFailure =
  | 'missing_token'
  | 'invalid_token'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'unknown_agent'
  | 'keys_unavailable';

export type AuthOutcome = AgentIdentity | { readonly failure: AuthFailure };

export function isFailure(o: AuthOutcome): o is { readonly failure: AuthFailure } {
  return 'failure' in o;
}

const DESCRIPTIONS: Record<AuthFailure, string> = {
  missing_token: 'This endpoint needs a bearer token.',
  invalid_token: 'The token is not recognized, is malformed, or its signature does not verify.',
  expired: 'The token has expired: get a new one.',
  not_yet_valid: 'The token is not valid yet (nbf is in the future).',
  wrong_issuer: 'The token was issued by an issuer this bus does not trust.',
  wrong_audience: 'The token was issued for another audience (resource).',
  unknown_agent: 'The token names no agent this bus accepts.',
  keys_unavailable: "The issuer's signing keys could not be fetched: try again shortly.",
};

/** The 401 body and `WWW-Authenticate` value for a refusal. */
export function challenge(
  failure: AuthFailure,
  resourceMetadata: string | undefined,
): {
  header: string;
  body: { error: string; error_description: string; reason: AuthFailure };
} {
  const params: string[] = [];
  if (resourceMetadata) params.push(`resource_metadata="${resourceMetadata}"`);
  // RFC 6750 §3.1: a request with no credentials gets no error code; any other refusal is invalid_token.
  const error = failure === 'missing_token' ? 'invalid_request' : 'invalid_token';
  if (failure !== 'missing_token') params.push(`error="${error}"`, `error_description="${DESCRIPTIONS[failure]}"`);
  return {
    header: params.length > 0 ? `Bearer ${params.join(', ')}` : 'Bearer realm="toolbus"',
    body: { error, error_description: DESCRIPTIONS[failure], reason: failure },
  };
}
