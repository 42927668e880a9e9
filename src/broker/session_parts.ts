/**
 * What sessions are built from ({@link SessionParts}) and the two small interfaces the broker's
 * other parts share with them: {@link RunState} and {@link Commit}.
 *
 * @module
 */

import type { Outcome, RequestContext } from "../core/handlers.ts";
import type { BrokerOptions } from "../core/options.ts";
import type { Store } from "../core/store.ts";
import type { Governor } from "../core/governance.ts";
import type { UsageReport } from "../protocol/usage.ts";
import type { HashPool } from "../hash/verifier.ts";
import type { Poller } from "../sys/poller.ts";
import type { AuditOutput } from "./audit_sink.ts";
import type { Conn } from "./connection.ts";
import { checkSealedFd, type ObjectDescriptors, sealsOf } from "./descriptors.ts";
import type { PeerLedger } from "./admission.ts";
import type { ObjectEvents } from "./events.ts";
import type { ParkedWaits } from "./waits.ts";
import type { GovernorHooks } from "./governor_hooks.ts";
import type { Watchers } from "./watchers.ts";

/** Flags shared by the broker's parts. */
export interface RunState {
  /** The broker is stopping or handing over: no new requests, no keep-alive. */
  stopping: boolean;
}

/** Where a committed PUT or DROP goes before its reply (the shadow mirror). */
export interface Commit {
  /** True when replies to PUT and DROP wait for the shadow. */
  readonly active: boolean;
  /** Mirror the change, then call `done` (once). */
  commit(o: Outcome, done: () => void): void;
}

/** What sessions are built from. */
export interface SessionParts {
  readonly options: BrokerOptions;
  readonly store: Store;
  readonly poller: Poller;
  readonly audit: AuditOutput;
  readonly hash: HashPool;
  readonly waits: ParkedWaits<Conn>;
  readonly descriptors: ObjectDescriptors;
  readonly events: ObjectEvents;
  readonly run: RunState;
  readonly mirror: Commit;
  /** Largest object whose digest is computed on the loop; larger PUTs start hashing early. */
  readonly inlineHashLimit: number;
  /** A TAKEOVER request arrived on `conn` (its header is read and valid). */
  readonly takeover: (conn: Conn) => void;
  /** Per-peer accounting, told when a connection closes (see `admission.ts`). */
  readonly ledger: PeerLedger | null;
  /** Memory governance, and who carries out its releases. */
  readonly governor?: { readonly rules: Governor; readonly hooks: GovernorHooks };
  /** Watch streams. */
  readonly watchers?: Watchers;
  /** Told each request's time from its header to its reply, in seconds (metrics). */
  readonly latency?: ((seconds: number) => void) | null;
  /** Told of each PUT stored on the memfd of identical content (metrics). */
  readonly deduped?: () => void;
  /** Where an internal error in one request is reported (one line). */
  readonly report: (message: string) => void;
}

/** What a request's handler is given for `conn`, beyond the broker's parts. */
export interface ContextDeps {
  /** A fresh descriptor of a stored object, for a GET reply. */
  readonly reopen: RequestContext["reopen"];
  /** An object left the store (`last`: its memfd is no longer shared). */
  readonly release: RequestContext["release"];
  /** The audit clock. */
  readonly now: RequestContext["now"];
  /** The cluster tier's view, or null without --cluster. */
  readonly cluster: NonNullable<RequestContext["cluster"]> | null;
}

/**
 * The context a handler runs in for one request on `conn`: the store and options, the
 * descriptor the request brought, the peer, and the checks and shares the pure core may not
 * make itself.
 */
export function requestContext(p: SessionParts, conn: Conn, deps: ContextDeps): RequestContext {
  return new ConnContext(p, conn, deps);
}

/**
 * {@link requestContext}'s object: a class, so that a request costs one allocation (the shares
 * are methods on its prototype, not closures made per request).
 */
class ConnContext implements RequestContext {
  readonly store: Store;
  readonly options: BrokerOptions;
  readonly fd: number;
  readonly fdLost: boolean;
  readonly peer: Conn["peer"];
  readonly reopen: RequestContext["reopen"];
  readonly release: RequestContext["release"];
  readonly checkSealed: RequestContext["checkSealed"] = checkSealedFd;
  readonly seals: RequestContext["seals"] = sealsOf;
  readonly now: RequestContext["now"];
  readonly governor: Governor | undefined;
  readonly watchQueueLength: number;
  readonly cluster: NonNullable<RequestContext["cluster"]> | null;
  readonly #p: SessionParts;
  readonly #conn: Conn;

  constructor(p: SessionParts, conn: Conn, deps: ContextDeps) {
    this.#p = p;
    this.#conn = conn;
    this.store = p.store;
    this.options = p.options;
    this.fd = conn.reqFd;
    this.fdLost = conn.fdLost;
    this.peer = conn.peer;
    this.reopen = deps.reopen;
    this.release = deps.release;
    this.now = deps.now;
    this.governor = p.governor?.rules;
    this.watchQueueLength = p.watchers?.queueLength ?? 0;
    this.cluster = deps.cluster;
  }

  storeShare(size: number, metadata?: number): string | null {
    return this.#p.ledger?.storing(this.#conn.peer?.uid, size, metadata) ?? null;
  }

  watchShare(): string | null {
    return this.#p.ledger?.watching?.(this.#conn) ?? null;
  }

  usage(caller: string | null): UsageReport | null {
    return this.#p.ledger?.usage?.(this.#conn, caller, this.#p.store) ?? null;
  }
}
