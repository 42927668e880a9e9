/**
 * The broker's event loop: one epoll instance, polled on the JavaScript thread when there is work
 * and waited on from Deno's blocking pool when there is none (woken by the poller's eventfd), a
 * periodic sweep for deadlines, and a flush of the audit log before every sleep.
 *
 * The loop knows nothing of connections: it hands each readiness event to its {@link LoopDriver}
 * (the broker facade routes it by token to admission, the shadow mirror or a session).
 *
 * @module
 */

import { Poller, type PollEvent } from "../sys/poller.ts";

/** Token of the listening socket. */
export const LISTEN_TOKEN = 0xfffffffe;
/** Token of the shadow link. */
export const SHADOW_TOKEN = 0xfffffffd;
/** Session tokens are below this. */
export const FIRST_RESERVED_TOKEN = SHADOW_TOKEN;

/** How often deadlines are checked. */
export const SWEEP_MS = 100;
/** In blocking-wait mode: longest stretch without letting the event loop run. */
const YIELD_MS = 5;
/** In blocking-wait mode: quiet time after which the loop waits off-thread again. */
const IDLE_SWITCH_MS = 50;

/** What the loop drives. */
export interface LoopDriver {
  /** Handle one readiness event. */
  event(ev: PollEvent): void;
  /** Timer work (deadlines, retries); called about every {@link SWEEP_MS}. */
  sweep(now: number): void;
  /** Before the loop sleeps or yields: write the audit log. */
  beforeSleep(): void;
  /** Checked at the top of every turn: true when the broker has stopped (the loop ends). */
  finished(): boolean;
  /** True when no deadline is pending, so the loop may sleep without a timeout. */
  quiet(): boolean;
  /**
   * True while work finishes outside the loop: Workers hashing, or cluster transfers (then the
   * loop waits off-thread, so that the event loop takes their answers and data at once).
   */
  offLoopWork(): boolean;
  /** The loop failed (a bug): report it and stop. */
  crashed(error: unknown): void;
}

/** The loop; {@link EventLoop.run} returns when the driver is finished. */
export class EventLoop {
  /** The epoll instance every part registers its descriptors with. */
  readonly poller: Poller = new Poller(256);
  readonly #events: PollEvent[] = [];
  readonly #blocking: boolean;
  #nextSweep = 0;
  /**
   * The loop's last clock reading (performance.now(), ms): taken once per turn, after the turn's
   * events, and after an off-thread wait (which may have slept long). Parts that need the time per
   * request (the audit budget) read it rather than the clock.
   */
  now: number = performance.now();

  /**
   * @param blocking wait on the JavaScript thread while busy (a broker with its own process)
   */
  constructor(blocking: boolean) {
    this.#blocking = blocking;
  }

  /** Run until `driver.finished()`. */
  async run(driver: LoopDriver): Promise<void> {
    const poller = this.poller;
    // One clock reading per turn (performance.now() is a runtime call): taken after the turn's
    // events, it serves the sweep, and the next turn's decisions (nothing but the `finished`
    // check runs in between).
    let now = this.now = performance.now();
    let lastEvent = now;
    let lastYield = now;
    try {
      for (;;) {
        if (driver.finished()) return;
        // While a Worker verifies a digest or the cluster tier streams a blob, wait off-thread:
        // the event loop then takes the Worker's answer or the engine's data the moment it
        // comes (a thread blocked in epoll_wait would only see it at its next yield, which
        // measured up to tens of milliseconds late).
        const busy = this.#blocking && now - lastEvent < IDLE_SWITCH_MS && !driver.offLoopWork();
        let events: PollEvent[];
        if (busy && now - lastYield < YIELD_MS) {
          // Block on this thread: the kernel wakes it directly, without a pool-thread hop. While
          // busy, audit lines are written at every yield (at most YIELD_MS apart), not after
          // every request.
          const slice = Math.max(1, Math.ceil(YIELD_MS - (now - lastYield)));
          events = poller.poll(this.#events, Math.min(slice, this.#waitTimeout(driver, now) >>> 0));
        } else {
          events = this.#blocking ? [] : poller.poll(this.#events);
          if (events.length === 0) {
            // Write the audit log, let the event loop run (signals, Worker messages), then
            // wait off-thread.
            driver.beforeSleep();
            lastYield = now;
            events = await poller.wait(
              busy ? 0 : this.#waitTimeout(driver, performance.now()),
              this.#events,
            );
            // The wait may have slept for long: the events it brought are handled at the time
            // they came (the audit budget refills by it), not at the time the loop went to sleep.
            this.now = performance.now();
          }
        }
        for (const ev of events) driver.event(ev);
        now = this.now = performance.now();
        if (events.length > 0) lastEvent = now;
        if (now >= this.#nextSweep) {
          this.#nextSweep = now + SWEEP_MS;
          driver.sweep(now);
        }
      }
    } catch (e) {
      driver.crashed(e);
    }
  }

  #waitTimeout(driver: LoopDriver, now: number): number {
    if (driver.quiet()) return -1;
    return Math.max(1, Math.ceil(this.#nextSweep - now));
  }

  /** End an off-thread wait now (something changed outside the loop). */
  wake(): void {
    this.poller.wake();
  }

  /** Close the epoll instance. */
  close(): void {
    this.poller.close();
  }
}
