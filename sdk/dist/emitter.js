// A minimal typed event emitter: no dependency on Node's `events` or the DOM's `EventTarget`, so the
// same code runs in browsers and in Node.
/** Typed `on`/`off`/`once` over an event map (event name → payload type). */
export class Emitter {
    constructor() {
        this.listeners = new Map();
    }
    /** Calls `listener` for every `event`; returns a function that removes it. */
    on(event, listener) {
        let set = this.listeners.get(event);
        if (!set) {
            set = new Set();
            this.listeners.set(event, set);
        }
        set.add(listener);
        return () => this.off(event, listener);
    }
    /** Calls `listener` for the next `event` only. */
    once(event, listener) {
        const off = this.on(event, (e) => {
            off();
            listener(e);
        });
        return off;
    }
    /** Removes `listener` from `event`. */
    off(event, listener) {
        this.listeners.get(event)?.delete(listener);
    }
    /** Calls every listener of `event`; a listener that throws does not stop the others. */
    emit(event, payload) {
        const set = this.listeners.get(event);
        if (!set)
            return;
        for (const listener of [...set]) {
            try {
                listener(payload);
            }
            catch (err) {
                // A broken listener must not break the protocol state machine that called it.
                setTimeout(() => {
                    throw err;
                }, 0);
            }
        }
    }
}
