/** Backoff settings (milliseconds). */
export interface BackoffOptions {
    /** The base delay: the first retry waits up to this. Default 250. */
    baseMs?: number;
    /** The cap: no retry waits longer than this. Default 10000. */
    maxMs?: number;
}
/** PROTOCOL.md section 1 suggests 250 ms doubling to 10 s. */
export declare const DEFAULT_BACKOFF: Required<BackoffOptions>;
/**
 * The delay before retry number `attempt` (0 for the first): uniform in [0, min(max, base · 2^attempt)]
 * ("full jitter"), so clients that lost the same node spread their reconnects over the whole window
 * instead of arriving together.
 */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
