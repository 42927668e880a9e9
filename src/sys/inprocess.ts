/**
 * Process-wide facts that change how clients wait: a broker running in this same process can only
 * make progress while the event loop runs, so clients must never block the thread waiting for it.
 *
 * @module
 */

/** Counters shared by the broker and client modules. */
export const inProcess: { brokers: number } = { brokers: 0 };
