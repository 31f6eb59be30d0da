// Reconnect delays: exponential backoff with full jitter and a cap.

/** Backoff settings (milliseconds). */
export interface BackoffOptions {
  /** The base delay: the first retry waits up to this. Default 250. */
  baseMs?: number;
  /** The cap: no retry waits longer than this. Default 10000. */
  maxMs?: number;
}

/** PROTOCOL.md section 1 suggests 250 ms doubling to 10 s. */
export const DEFAULT_BACKOFF: Required<BackoffOptions> = { baseMs: 250, maxMs: 10000 };

/**
 * The delay before retry number `attempt` (0 for the first): uniform in [0, min(max, base · 2^attempt)]
 * ("full jitter"), so clients that lost the same node spread their reconnects over the whole window
 * instead of arriving together.
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
  const max = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
  const ceiling = Math.min(max, base * 2 ** Math.min(Math.max(0, attempt), 30));
  return Math.round(ceiling * random());
}
