// Reconnect delays: exponential backoff with full jitter and a cap.
/** PROTOCOL.md section 1 suggests 250 ms doubling to 10 s. */
export const DEFAULT_BACKOFF = { baseMs: 250, maxMs: 10000 };
/**
 * The delay before retry number `attempt` (0 for the first): uniform in [0, min(max, base · 2^attempt)]
 * ("full jitter"), so clients that lost the same node spread their reconnects over the whole window
 * instead of arriving together.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
    const base = options.baseMs ?? DEFAULT_BACKOFF.baseMs;
    const max = options.maxMs ?? DEFAULT_BACKOFF.maxMs;
    const ceiling = Math.min(max, base * 2 ** Math.min(Math.max(0, attempt), 30));
    return Math.round(ceiling * random());
}
