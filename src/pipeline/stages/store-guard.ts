// Maps an unreachable store to the agent-facing store_unavailable error: writes fail closed rather than risk a
// double write.
import { BusError } from '../../errors.js';
import { StoreUnavailable } from '../../store/contract.js';

export async function guardStore<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof StoreUnavailable) {
      throw new BusError(
        'store_unavailable',
        'store_unreachable',
        'The state store is unreachable; the write was refused.',
        {
          retryAfterMs: 1000,
          cause: err,
        },
      );
    }
    throw err;
  }
}
