/**
 * `memfdbus usage [--job-id JOB] [--socket PATH] [--json]`: what the broker, each job and each
 * uid hold (objects, and bytes charged after dedup) next to their limits, as a table or one
 * JSON object. A broker without the USAGE extension (a C broker) makes it fail with
 * `the broker does not support usage (...)`, exit 1.
 *
 * @module
 */

import type { UsageEntry, UsageReport } from "../client.ts";
import { UsageError } from "../errors.ts";
import {
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  resolveJob,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";

const limitText = (v: bigint | null): string => (v === null ? "-" : String(v));

/**
 * The table of `usage`: one row per holder (broker, then jobs, then uids), columns aligned.
 *
 * ```
 * HOLDER       OBJECTS  MAX_OBJECTS  BYTES  MAX_BYTES
 * broker             3            -   4096          -
 * job trainer        2           10   2048          -
 * uid 1001           3          750   4096          -
 * ```
 */
export function usageText(r: UsageReport): string {
  const rows: string[][] = [["HOLDER", "OBJECTS", "MAX_OBJECTS", "BYTES", "MAX_BYTES"]];
  const row = (holder: string, e: UsageEntry): void => {
    rows.push([
      holder,
      String(e.objects),
      limitText(e.maxObjects),
      String(e.bytes),
      limitText(e.maxBytes),
    ]);
  };
  row("broker", r.broker);
  for (const j of r.jobs) row(`job ${j.job}`, j);
  for (const u of r.uids) row(`uid ${u.uid}`, u);
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((cells) => cells[i]?.length ?? 0))) ??
    [];
  return rows.map((cells) =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ") + "\n"
  ).join("");
}

/**
 * The JSON object of `usage --json` (limits as numbers, or strings beyond 2^53 - 1). The broker
 * and uid entries carry `metadata_bytes` and `max_metadata_bytes` when the broker reports them.
 */
export function usageJson(r: UsageReport): Record<string, unknown> {
  const entry = (e: UsageEntry) => ({
    objects: e.objects,
    bytes: e.bytes,
    max_objects: e.maxObjects,
    max_bytes: e.maxBytes,
    ...(e.metadataBytes === undefined ? {} : {
      metadata_bytes: e.metadataBytes,
      max_metadata_bytes: e.maxMetadataBytes ?? null,
    }),
  });
  return {
    scope: r.scope,
    broker: entry(r.broker),
    jobs: r.jobs.map((j) => ({ job: j.job, ...entry(j) })),
    uids: r.uids.map((u) => ({ uid: u.uid, ...entry(u) })),
  };
}

/** Run `usage`; returns the exit code. */
export async function usageCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, { ...CLIENT_FLAGS, json: "boolean" });
  const s = clientDefaults();
  let json = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind === "positional") throw new UsageError(`unexpected argument: ${it.text}`);
  }
  const job = resolveJob(s.jobFlag);
  await using client = cliClient(s, job);
  const report = await client.usage();
  out(json ? jsonLine(usageJson(report)) : usageText(report));
  return 0;
}
