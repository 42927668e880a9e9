/**
 * memfdbus: a local object bus for Linux that passes large immutable blobs between processes as
 * sealed memfds over a Unix socket, without copying their bytes through the broker.
 *
 * This module is the public API: a {@link Client} to publish and fetch objects, a {@link Broker}
 * to run one in-process, {@link Memfd} and {@link ReadOnlyMapping} for sealed memory files, and
 * the error types. It speaks protocol v1 of the C memfdbus byte for byte; the protocol itself
 * (header codec, codes, texts, LIST and STAT formats) is exported from
 * `@memfdbus/memfdbus/protocol` for programs that speak it themselves.
 *
 * @example Publish a file and map it back
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 *
 * await using client = new Client(); // /tmp/memfdbus.sock
 * const { id, digest } = await client.put("./model.bin", { name: "model.bin" });
 * using obj = await client.get({ name: "model.bin" });
 * console.log(id, digest, obj.view.length);
 * ```
 *
 * @module
 */

export {
  BusObject,
  Client,
  type ClientOptions,
  type ClientWatchOptions,
  DEFAULT_TIMEOUT_MS,
  defaultSocket,
  type DropResult,
  type FdSource,
  type GetOptions,
  jobIdFromEnv,
  type JobOption,
  type JobUsageEntry,
  type ListEntry,
  type ObjectStat,
  type PutOptions,
  type PutResult,
  type PutSource,
  type Selector,
  type UidUsageEntry,
  type UsageEntry,
  type UsageReport,
} from "./src/client.ts";
export { type AuditSink, Broker, type BrokerStartOptions } from "./src/broker.ts";
export { ShadowBusyError, type ShadowConfig } from "./src/shadow/link.ts";
export {
  type BrokerOptions,
  DEFAULT_SOCKET,
  defaultBrokerOptions,
  parseBrokerArgs,
} from "./src/core/options.ts";
export {
  BrokerError,
  ErrnoError,
  ProtocolError,
  Status,
  type StatusCode,
  TimeoutError,
  UnsupportedError,
  UsageError,
} from "./src/errors.ts";
export { ConnectError, SocketPathError } from "./src/client/connection.ts";
export {
  type BusEvent,
  Watch,
  type WatchOptions,
  type WatchTarget,
  type WatchTransport,
} from "./src/client/watch.ts";
export type { WatchKindName } from "./src/protocol/watch.ts";
export { BrokerIdentityError } from "./src/client/peer_check.ts";
export {
  type IdentityPolicy,
  type JobBinding,
  OPEN_POLICY,
  type Reservation,
  reservedText,
  unlistedJobsRule,
} from "./src/core/policy.ts";
export type { MetricsAddress } from "./src/core/options.ts";
export type { ClusterAuth, ClusterOptions, ClusterTls } from "./src/cluster/options.ts";
export type { PinRule, QuotaLimits, Quotas, RetentionRule } from "./src/core/governance.ts";
export type { PeerLimits } from "./src/core/fair_shares.ts";
export {
  getSeals,
  inspectSealedFd,
  isFdProblem,
  Memfd,
  MEMFD_NAME_MAX,
  type MemfdOptions,
  Seal,
  type SealedFdInfo,
} from "./src/sys/memfd.ts";
export { type FdProblem } from "./src/protocol/fd_problem.ts";
export { describeFdProblem } from "./src/client/fd_problem.ts";
export { ReadOnlyMapping } from "./src/sys/mapping.ts";
export { checkSocketPath, UnsafePathError } from "./src/sys/path_safety.ts";
export { PeerUidError } from "./src/sys/peer_uid.ts";
export { type CopyLabels, type CopyMethod, type CopyResult } from "./src/sys/copy.ts";
export { FileDescriptor, type FileStat } from "./src/sys/fd.ts";
export {
  DigestBuilder,
  digestBytes,
  digestFd,
  digestFdRead,
  digestObjectFd,
} from "./src/hash/digest.ts";
