/**
 * What a request handler talks to: the {@link Step}s it yields, what they resume with, the
 * {@link RequestContext} the broker passes in, the {@link Outcome} it returns, and the job-id
 * reader every handler shares. No system calls (see `../handlers.ts`).
 *
 * @module
 */

import { toBinary } from "../../protocol/bytes.ts";
import { type NameKind, nameProblem } from "../../protocol/names.ts";
import type { AuditRecord } from "../audit.ts";
import type { BrokerOptions } from "../options.ts";
import type { PeerIdentity } from "../policy.ts";
import type { UsageReport } from "../../protocol/usage.ts";
import type { Store, StoredObject } from "../store.ts";
import type { Governor, Release } from "../governance.ts";
import type { WatchSelector } from "../../protocol/watch.ts";
import type { ClusterView, RemoteAnswer, RemoteStep } from "../remote.ts";
import { Text } from "../../protocol/wire.ts";

/** A handler's request for more input. */
export type Step =
  /**
   * `length` more body bytes; resumed with them, or null if they never arrived. The bytes may be
   * a view of a buffer the broker reuses: they are valid until the handler's next step (every
   * handler turns them into a string or checks them before it yields again).
   */
  | { readonly kind: "read"; readonly length: number }
  /** The SHA-256 of the descriptor; resumed with a {@link DigestAnswer}. */
  | { readonly kind: "digest"; readonly fd: number; readonly size: number }
  /**
   * Wait (at most `ms`, 0: the broker's limit) until an object named `name` is published;
   * resumed with true when one was, false on timeout.
   */
  | {
    readonly kind: "wait";
    readonly name: string;
    readonly ms: number;
    /** The job the request claims (its per-job share of parked waits), or null. */
    readonly job?: string | null;
  }
  /** Ask the cluster tier (only with `ctx.cluster`); resumed with a {@link RemoteAnswer}. */
  | RemoteStep;

/** What a digest step resumes with. */
export type DigestAnswer = { readonly digest: string } | { readonly error: string };

/** What a step resumes with. */
export type StepInput = Uint8Array | null | DigestAnswer | boolean | RemoteAnswer;

/** One piece of a reply and the audit error text to use if sending it fails. */
export interface Segment {
  /** The bytes. */
  readonly bytes: Uint8Array;
  /** For replies audited after sending: the error text when this piece cannot be sent. */
  readonly failText: string | null;
}

/**
 * A reply body produced in pieces while the socket drains (LIST): the header, sent first,
 * already announces {@link ReplyStream.total} bytes; the session asks for one chunk at a time,
 * so an unread reply holds one chunk and the stream's snapshot, never the whole body.
 */
export interface ReplyStream {
  /** The body's length in bytes (what the header announced). */
  readonly total: number;
  /** Memory the stream holds until it ends (its snapshot), for the per-uid reply accounting. */
  readonly heldBytes: number;
  /** The audit error text when the body cannot be sent. */
  readonly failText: string;
  /**
   * True once every chunk has been produced: the sender then finishes the reply in the same
   * step as its last bytes, without another turn of the loop (a client that has read the whole
   * reply may connect again at once, and must find this connection closed).
   */
  readonly done: boolean;
  /**
   * The next chunk of about `max` bytes (whole lines, at least one), or null when the body is
   * complete. Throws when the chunks would not add up to {@link ReplyStream.total} (a bug).
   */
  next(max: number): Uint8Array | null;
}

/** The result of a request. */
export interface Outcome {
  /** The whole reply, header first; sent in one sendmsg. */
  readonly wire: Uint8Array;
  /** The reply's pieces, as views into {@link Outcome.wire}. */
  readonly segments: readonly Segment[];
  /** A descriptor to attach to the header (GET); the connection closes it after sending. */
  readonly fd: number;
  /** The audit record. */
  readonly audit: AuditRecord;
  /** True when the record is written after the reply is sent (GET and LIST successes). */
  readonly auditAfterSend: boolean;
  /** True when the store took ownership of the descriptor that came with the request. */
  readonly keptFd: boolean;
  /** True for a successful request (status 0). */
  readonly ok: boolean;
  /**
   * A PUT stored on the memfd of identical content: the request's descriptor is closed although
   * {@link Outcome.keptFd} says an object was committed.
   */
  readonly deduped?: boolean;
  /** Objects the broker releases once the PUT's reply is recorded (retention, eviction). */
  readonly retire?: readonly Release[];
  /** A WATCH that was accepted: after its reply the connection carries events. */
  readonly watch?: { readonly selector: WatchSelector; readonly caller: string | null };
  /** Extension bits the reply carries besides keep-alive and wait (the cluster listing's). */
  readonly extFlags?: number;
  /** The rest of the reply after {@link Outcome.wire}, produced chunk by chunk (LIST). */
  readonly stream?: ReplyStream;
}

/**
 * What checking a PUT's descriptor found: the size of a sealed memfd, or the broker's text for
 * what is wrong with it (for example `size mismatch: expected=5 fd=4`).
 */
export type SealedCheck = { readonly size: bigint } | { readonly problem: string };

/** What handlers need from the broker. */
export interface RequestContext {
  /** The object store. */
  readonly store: Store;
  /** Limits. */
  readonly options: BrokerOptions;
  /** The descriptor that arrived with the header, or -1. */
  readonly fd: number;
  /** True when descriptors were lost in transit (MSG_CTRUNC), e.g. at the descriptor limit. */
  readonly fdLost: boolean;
  /** The peer's credentials when the broker looked them up (identity policy, audit). */
  readonly peer?: PeerIdentity | undefined;
  /** A fresh descriptor for an object (its own open file description), or -errno. */
  reopen(obj: StoredObject): number;
  /**
   * A client dropped `obj` (already out of the store); `last` is what {@link Store.remove}
   * returned: close the broker's descriptor only when true (no other object shares it).
   */
  release(obj: StoredObject, last: boolean): void;
  /**
   * Memory governance (retention, quotas, eviction, dedup). Absent: only the broker's object
   * and byte limits apply, as in the C broker.
   */
  readonly governor?: Governor | undefined;
  /** The per-watcher queue length a WATCH reply announces. */
  readonly watchQueueLength?: number;
  /** Check that `fd` is a sealed memfd of `size` bytes. */
  checkSealed(fd: number, size: bigint): SealedCheck;
  /** The seal bits of a stored object's descriptor, or a negated errno. */
  seals(obj: StoredObject): number;
  /** The current CLOCK_REALTIME in ns. */
  now(): bigint;
  /**
   * The peer's fair share of the store (`src/core/fair_shares.ts`): the refusal text when one
   * more object of `size` bytes, charged `metadata` bytes of metadata (`metadataCost`), would
   * take its uid past it, else null. Absent: no shares.
   */
  storeShare?(size: number, metadata?: number): string | null;
  /**
   * May this connection become a watch stream? Counts it (until the connection closes) and
   * returns null, or returns the refusal text naming the watcher limit that was hit.
   */
  watchShare?(): string | null;
  /**
   * The USAGE report for this connection's peer asking as `caller` (see `src/core/usage.ts`).
   * Absent or null: the broker answers USAGE with `unknown command`.
   */
  usage?(caller: string | null): UsageReport | null;
  /** The broker's cluster tier, when it runs with `--cluster`. */
  readonly cluster?: ClusterView | null;
}

/** A handler generator. */
export type Handler = Generator<Step, Outcome, StepInput>;

/** The step asking for `length` more body bytes. */
export const READ = (length: number): Step => ({ kind: "read", length });

/** Read a job id; returns the binary string, or the error text. */
export function* readJob(
  length: number,
  texts: { read: string; empty: string; nul: string; kind: NameKind },
): Generator<Step, string | { error: string }, StepInput> {
  const bytes = (yield READ(length)) as Uint8Array | null;
  if (bytes === null) return { error: texts.read };
  if (bytes[0] === 0) return { error: texts.empty };
  if (bytes.includes(0)) return { error: texts.nul };
  const problem = nameProblem(bytes, texts.kind);
  if (problem !== null) return { error: problem };
  return toBinary(bytes);
}

/** The texts for reading a request's job id. */
export const JOB_TEXTS = {
  read: Text.readJob,
  empty: Text.emptyJob,
  nul: Text.nulInJob,
  kind: "job id" as const,
};
/** The texts for reading a PUT's allowed job id. */
export const ALLOW_TEXTS = {
  read: Text.readAllow,
  empty: Text.emptyAllow,
  nul: Text.nulInAllow,
  kind: "allowed job id" as const,
};
