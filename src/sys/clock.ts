/**
 * Clocks read through libc.
 *
 * @module
 */

import { libc } from "../ffi.ts";
import { CLOCK_REALTIME } from "./linux.ts";

const tsBuf = new BigInt64Array(2);
const tsBytes = new Uint8Array(tsBuf.buffer);

/** CLOCK_REALTIME in nanoseconds (0 if the clock call fails, like the C broker). */
export function realtimeNs(): bigint {
  if (libc.symbols.clock_gettime(CLOCK_REALTIME, tsBytes) !== 0) return 0n;
  const sec = tsBuf[0] ?? 0n;
  const nsec = tsBuf[1] ?? 0n;
  if (sec < 0n || nsec < 0n) return 0n;
  return sec * 1_000_000_000n + nsec;
}
