/**
 * `memfdbus stat OBJECT_ID|--name NAME [--job-id JOB] [--socket PATH] [--json]
 * [--wait[=SECONDS]]`: describe an object without fetching its bytes: id, name, size, digest,
 * seals, owner, allowed job and publication time, as aligned `key: value` lines or one JSON
 * object. Against a C broker (no STAT command) the client answers from a GET and a LIST, and
 * the publication time is unknown (`-`, or null in JSON).
 *
 * @module
 */

import type { GetOptions, ObjectStat } from "../client.ts";
import { UsageError } from "../errors.ts";
import { Seal } from "../sys/memfd.ts";
import {
  checkName,
  checkWait,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  CliUsageError,
  parseCommandLine,
  parseId,
  parseWait,
  resolveJob,
} from "./args.ts";
import { escapeControls, jsonLine, out } from "./output.ts";
import { STAT_USAGE } from "./usage.ts";

/** F_SEAL_EXEC (Linux 6.3): the exec bits can no longer change. */
const F_SEAL_EXEC = 0x20;

const SEAL_NAMES: ReadonlyArray<readonly [number, string]> = [
  [Seal.SEAL, "SEAL"],
  [Seal.SHRINK, "SHRINK"],
  [Seal.GROW, "GROW"],
  [Seal.WRITE, "WRITE"],
  [Seal.FUTURE_WRITE, "FUTURE_WRITE"],
  [F_SEAL_EXEC, "EXEC"],
];

/** The names of the seal bits, lowest bit first; unknown bits appear as hex (`0x40`). */
export function sealNames(seals: number): string[] {
  const names: string[] = [];
  let rest = seals;
  for (const [bit, name] of SEAL_NAMES) {
    if ((seals & bit) !== 0) names.push(name);
    rest &= ~bit;
  }
  for (let bit = 1; rest !== 0 && bit !== 0; bit <<= 1) {
    if ((rest & bit) !== 0) names.push(`0x${(bit >>> 0).toString(16)}`);
    rest &= ~bit;
  }
  return names;
}

/** `SEAL|SHRINK|GROW|WRITE (0xf)`, `none (0x0)`, or `-` when unknown. */
export function describeSeals(seals: number | null): string {
  if (seals === null) return "-";
  const names = sealNames(seals);
  return `${names.length === 0 ? "none" : names.join("|")} (0x${(seals >>> 0).toString(16)})`;
}

/** A CLOCK_REALTIME time in ns as ISO 8601 UTC with nanoseconds, or null when unknown. */
export function isoFromNs(ns: bigint | null): string | null {
  if (ns === null || ns < 0n) return null;
  const seconds = ns / 1_000_000_000n;
  const fraction = String(ns % 1_000_000_000n).padStart(9, "0");
  const date = new Date(Number(seconds) * 1000);
  if (Number.isNaN(date.getTime())) return null;
  return `${date.toISOString().slice(0, 19)}.${fraction}Z`;
}

/** The `key: value` lines of `stat`, values aligned after the longest key. */
export function statText(s: ObjectStat): string {
  const rows: Array<readonly [string, string]> = [
    ["id", String(s.id)],
    ["name", escapeControls(s.name)],
    ["size", String(s.size)],
    ["digest", s.digest],
    ["seals", describeSeals(s.seals)],
    ["owner", escapeControls(s.owner ?? "-")],
    ["allowed", escapeControls(s.allowed ?? "-")],
    ["created", isoFromNs(s.createdNs) ?? "-"],
  ];
  // Extensions, shown only when the broker tells them.
  if (s.shared !== undefined && s.shared !== null) {
    rows.push(["shared", s.shared ? "yes (identical content stored once)" : "no"]);
  }
  if (s.ownerUsage !== undefined && s.ownerUsage !== null) {
    rows.push(["owner holds", `${s.ownerUsage.objects} objects, ${s.ownerUsage.bytes} bytes`]);
  }
  // Only objects pulled from the cluster tier have an origin line.
  if (s.origin != null) {
    rows.push(["origin", `${s.origin.host} id=${s.origin.id} revision=${s.origin.revision}`]);
  }
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v}\n`).join("");
}

/** The JSON object of `stat --json` (ids as numbers up to 2^53-1, see {@link jsonLine}). */
export function statJson(s: ObjectStat): Record<string, unknown> {
  return {
    id: s.id,
    name: s.name,
    size: s.size,
    digest: s.digest,
    seals: s.seals,
    seal_names: s.seals === null ? null : sealNames(s.seals),
    owner: s.owner,
    allowed: s.allowed,
    created: isoFromNs(s.createdNs),
    shared: s.shared ?? null,
    owner_usage: s.ownerUsage ?? null,
    ...(s.origin == null ? {} : { origin: s.origin }),
  };
}

/** Run `stat`; returns the exit code. */
export async function statCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, {
    ...CLIENT_FLAGS,
    name: "string",
    wait: "string",
    json: "boolean",
  });
  const s = clientDefaults();
  let name: string | undefined;
  let id: bigint | undefined;
  let json = false;
  let waitText: string | undefined;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "flag" && it.flag === "--wait") {
      // Checked at once: a mistaken value must not hide behind a usage message.
      parseWait(it.value, 0);
      waitText = it.value;
    } else if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind !== "positional") continue;
    else if (name === undefined && id === undefined) id = parseId(it.text);
    else throw new UsageError(`unexpected argument: ${it.text}`);
  }
  if ((id !== undefined) === (name !== undefined)) throw new CliUsageError(STAT_USAGE);
  checkWait(waitText, name !== undefined);
  const wait = waitText === undefined ? undefined : parseWait(waitText, s.timeoutMs);
  if (name !== undefined) checkName(name);
  const job = resolveJob(s.jobFlag);

  await using client = cliClient(s, job);
  const options: GetOptions = wait === undefined ? {} : { wait };
  const st = await client.stat(id !== undefined ? id : { name: name ?? "" }, options);
  out(json ? jsonLine(statJson(st)) : statText(st));
  return 0;
}
