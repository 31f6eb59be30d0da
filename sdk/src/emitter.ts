// A minimal typed event emitter: no dependency on Node's `events` or the DOM's `EventTarget`, so the
// same code runs in browsers and in Node.

/** A listener of the event `K` of the event map `M`. */
export type Listener<M, K extends keyof M> = (event: M[K]) => void;

/** Typed `on`/`off`/`once` over an event map (event name → payload type). */
export class Emitter<M> {
  private readonly listeners = new Map<keyof M, Set<(event: never) => void>>();

  /** Calls `listener` for every `event`; returns a function that removes it. */
  on<K extends keyof M>(event: K, listener: Listener<M, K>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (event: never) => void);
    return () => this.off(event, listener);
  }

  /** Calls `listener` for the next `event` only. */
  once<K extends keyof M>(event: K, listener: Listener<M, K>): () => void {
    const off = this.on(event, (e) => {
      off();
      listener(e);
    });
    return off;
  }

  /** Removes `listener` from `event`. */
  off<K extends keyof M>(event: K, listener: Listener<M, K>): void {
    this.listeners.get(event)?.delete(listener as (event: never) => void);
  }

  /** Calls every listener of `event`; a listener that throws does not stop the others. */
  protected emit<K extends keyof M>(event: K, payload: M[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<M, K>)(payload);
      } catch (err) {
        // A broken listener must not break the protocol state machine that called it.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }
}
