/** A listener of the event `K` of the event map `M`. */
export type Listener<M, K extends keyof M> = (event: M[K]) => void;
/** Typed `on`/`off`/`once` over an event map (event name → payload type). */
export declare class Emitter<M> {
    private readonly listeners;
    /** Calls `listener` for every `event`; returns a function that removes it. */
    on<K extends keyof M>(event: K, listener: Listener<M, K>): () => void;
    /** Calls `listener` for the next `event` only. */
    once<K extends keyof M>(event: K, listener: Listener<M, K>): () => void;
    /** Removes `listener` from `event`. */
    off<K extends keyof M>(event: K, listener: Listener<M, K>): void;
    /** Calls every listener of `event`; a listener that throws does not stop the others. */
    protected emit<K extends keyof M>(event: K, payload: M[K]): void;
}
