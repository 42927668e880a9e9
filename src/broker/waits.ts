/**
 * Parked requests: a GET or STAT with the WAIT flag for a name nobody has published yet waits
 * here, by name, until a PUT of that name commits (the session then answers it) or its deadline
 * passes (the sweep expires it). The number parked is capped by `--max-waiters`.
 *
 * This is only the bookkeeping; the session resumes a woken request.
 *
 * @module
 */

/** Requests parked by the name they wait for. */
export class ParkedWaits<T> {
  readonly #byName = new Map<string, Set<T>>();
  #count = 0;

  /** Requests parked now. */
  get count(): number {
    return this.#count;
  }

  /** True when nothing is parked (then a publish has no one to wake). */
  get empty(): boolean {
    return this.#byName.size === 0;
  }

  /** Park a request until `name` is published. */
  park(name: string, waiter: T): void {
    let set = this.#byName.get(name);
    if (set === undefined) this.#byName.set(name, set = new Set());
    set.add(waiter);
    this.#count++;
  }

  /** Take a request out (it ended: timeout, hang-up, close). */
  unpark(name: string, waiter: T): void {
    const set = this.#byName.get(name);
    if (set?.delete(waiter)) {
      this.#count--;
      if (set.size === 0) this.#byName.delete(name);
    }
  }

  /**
   * `name` was published: remove and return everyone waiting for it. Each of them still counts
   * as parked until the caller reports it {@link ParkedWaits.woken}, one by one as it answers
   * them.
   */
  takeAll(name: string): Set<T> | undefined {
    const set = this.#byName.get(name);
    if (set !== undefined) this.#byName.delete(name);
    return set;
  }

  /** One request returned by {@link ParkedWaits.takeAll} is no longer parked. */
  woken(): void {
    this.#count--;
  }
}
