/**
 * What request handlers know of a cluster tier (`broker --cluster`), as plain data and pure
 * functions: the view that tells a handler when to ask the cluster, the step a handler yields to
 * ask it, and the answers it gets back. The broker's cluster bridge (`src/broker/cluster_bridge.ts`,
 * loaded only with `--cluster`) does the work; nothing here makes a system call or knows NATS.
 *
 * @module
 */

import type { StoredObject } from "./store.ts";

/** A version of a name as the cluster has it. Strings are binary strings of the raw bytes. */
export interface RemoteVersion {
  /** The name. */
  readonly name: string;
  /** `sha256:<hex>` of the contents. */
  readonly digest: string;
  /** Size in bytes. */
  readonly size: number;
  /** The publishing job, or null. */
  readonly owner: string | null;
  /** The one other job that may read it, or null. */
  readonly allowed: string | null;
  /** The host id of the broker that published it. */
  readonly originHost: string;
  /** Its object id on that host. */
  readonly originId: number;
  /** The cluster revision that committed it. */
  readonly revision: number;
}

/** What handlers may ask the broker's cluster bridge without waiting (no I/O). */
export interface ClusterView {
  /**
   * True when a GET or STAT of `name` must ask the cluster: nothing local has the name, or the
   * cluster's latest version (as last seen) is newer than `local`.
   */
  stale(name: string, local: StoredObject | undefined): boolean;
  /** True when a DROP of `name` goes to the cluster (`local` is not a host-only object). */
  shared(name: string, local: StoredObject | undefined): boolean;
}

/** A handler's request to the cluster tier; the session resumes it with a {@link RemoteAnswer}. */
export interface RemoteStep {
  /** The step kind. */
  readonly kind: "remote";
  /**
   * `fetch`: make the cluster's latest version of `name` a local object; `drop`: drop the
   * cluster's newest version of `name`; `list`: the cluster's latest version of every name.
   */
  readonly op: "fetch" | "drop" | "list";
  /** The name (empty for `list`). */
  readonly name: string;
  /** The requesting job, for the cluster's copy of the policy check (no pull for a refusal). */
  readonly caller: string | null;
}

/** What a {@link RemoteStep} resumes with. */
export type RemoteAnswer =
  /** `fetch`: the local object that holds the cluster's latest version. */
  | { readonly kind: "object"; readonly obj: StoredObject }
  /** The cluster has no live version of the name (fetch, drop). */
  | { readonly kind: "none" }
  /** The caller may not read (fetch) or drop (drop) the cluster's version; nothing was done. */
  | { readonly kind: "denied"; readonly version: RemoteVersion }
  /** `drop`: the version dropped cluster-wide, and the local copy removed with it, if any. */
  | {
    readonly kind: "dropped";
    readonly version: RemoteVersion;
    readonly local: StoredObject | undefined;
  }
  /** `list`: every name's latest version, sorted by name bytes. */
  | { readonly kind: "list"; readonly versions: readonly RemoteVersion[] }
  /** The cluster could not be asked (for example `cluster unavailable: resolve: not connected`). */
  | { readonly kind: "error"; readonly text: string };

/**
 * One line of the cluster listing (LIST with the CLUSTER bit), tab-separated like the local
 * listing: `REVISION host=HOST owner=JOB allowed=JOB SIZE DIGEST NAME`, `-` for no job.
 *
 * @param v the version
 */
export function formatClusterListLine(v: RemoteVersion): string {
  return `${v.revision}\thost=${v.originHost}\towner=${v.owner ?? "-"}\t` +
    `allowed=${v.allowed ?? "-"}\t${v.size}\t${v.digest}\t${v.name}\n`;
}

/** The length of {@link formatClusterListLine}'s line for `v`, without building it. */
export function clusterListLineLength(v: RemoteVersion): number {
  // "\thost=" 6, "\towner=" 7, "\tallowed=" 9, three more tabs and the newline 4.
  return String(v.revision).length + 6 + v.originHost.length + 7 + (v.owner ?? "-").length + 9 +
    (v.allowed ?? "-").length + 4 + String(v.size).length + v.digest.length + v.name.length;
}
