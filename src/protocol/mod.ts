/**
 * Protocol v1 of memfdbus, for programs that speak it themselves (a raw client, a test harness, a
 * proxy): the 48-byte header and its codec, command, flag and status codes, the length limits,
 * the digest string, the error texts the broker sends byte for byte, and the LIST and STAT body
 * formats. Everything here is pure: no I/O, no descriptors.
 *
 * Most programs need none of it: `Client` and `Broker` from `@memfdbus/memfdbus` speak the
 * protocol for them.
 *
 * @example Encoding a LIST request and decoding its reply header
 * ```ts
 * import { Cmd, decodeHeader, encodeHeader, HEADER_SIZE, isValidHeader } from "@memfdbus/memfdbus/protocol";
 * const request = encodeHeader({ cmd: Cmd.LIST });
 * const reply = decodeHeader(request); // a broker echoes cmd; here the request stands in for it
 * console.log(request.length === HEADER_SIZE, isValidHeader(reply), reply.cmd === Cmd.LIST);
 * ```
 *
 * @module
 */

export {
  addExtFlags,
  Cmd,
  decodeHeader,
  emptyHeader,
  encodeHeader,
  EXT_MARK,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidHeader,
  JOB_MAX,
  MAGIC,
  NAME_HARD_MAX,
  Off,
  Text,
  VERSION,
  withExt,
} from "./wire.ts";
export { DIGEST_LEN, DIGEST_PREFIX, formatDigest, isValidDigest } from "./digest.ts";
export {
  formatListLine,
  type ListEntry,
  type ListLineFields,
  listLineLength,
  parseList,
} from "./list.ts";
export {
  formatUsage,
  type JobUsageEntry,
  parseUsage,
  type UidUsageEntry,
  type UsageEntry,
  type UsageReport,
} from "./usage.ts";
export { formatStat, parseStat, type StatBody, type StatFields, type StatOrigin } from "./stat.ts";
export { isPrintableName, type NameKind, nameProblem } from "./names.ts";
export { Status, type StatusCode } from "../errors.ts";
