// Stage 1. The HTTP/stdio front has already matched the bearer token to an agent (an unknown caller got a bare 401
// and learned nothing, not even the tool list). Here the bus re-checks that the agent still exists: a token revoked
// by a live config reload must stop working for sessions that were opened before.
import { BusError } from '../../errors.js';
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';

export function authenticate(services: PipelineServices): Stage {
  return function authenticateStage(ctx, next) {
    if (!services.isAgentActive(ctx.agent.id)) {
      throw new BusError('auth', 'agent_revoked', 'This agent is no longer configured on the bus.');
    }
    return next();
  };
}
