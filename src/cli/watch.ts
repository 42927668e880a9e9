/**
 * `memfdbus watch [--name NAME | --prefix PREFIX] [--job-id JOB] [--socket PATH] [--json]
 * [--once]`: print one line per event (publish, drop, release, evict, missed) until interrupted
 * (SIGINT or SIGTERM end it with status 0), or after the first event with `--once`.
 *
 * A line is tab-separated: time (ISO 8601 UTC with nanoseconds), kind, id, size, digest (`-` for
 * `missed`), missed count, name (`*` for a `missed` of any name). With `--json`, one JSON object
 * per line: kind, id, name, size, digest, time, time_ns, missed.
 *
 * @module
 */

import { Connection } from "../client/connection.ts";
import { type BusEvent, Watch, type WatchTarget } from "../client/watch.ts";
import { UsageError } from "../errors.ts";
import {
  checkName,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  resolveJob,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";

/** Usage of `watch`. */
export const WATCH_USAGE =
  "usage: memfdbus watch [--name NAME | --prefix PREFIX] [--job-id JOB]\n" +
  "                      [--socket PATH] [--timeout SECONDS] [--json] [--once]";

/** The parsed arguments of `watch`. */
export interface WatchArgs {
  /** The broker socket. */
  readonly socket: string;
  /** What to watch. */
  readonly target: WatchTarget;
  /** The `--job-id` flag, if given. */
  readonly jobFlag: string | undefined;
  /** JSON lines. */
  readonly json: boolean;
  /** Exit after the first event. */
  readonly once: boolean;
  /**
   * `--timeout SECONDS` in milliseconds (default 30 s): how long connecting and the broker's
   * answer to the subscription may take; the events themselves are awaited without a limit.
   */
  readonly timeoutMs: number;
}

/**
 * Parse the arguments after `watch` (the last of a repeated flag wins), in the grammar of every
 * subcommand (`--flag value` or `--flag=value`).
 */
export function parseWatchArgs(args: readonly string[]): WatchArgs {
  const { items } = parseCommandLine(args, {
    ...CLIENT_FLAGS,
    name: "string",
    prefix: "string",
    json: "boolean",
    once: "boolean",
  });
  const s = clientDefaults();
  let name: string | undefined;
  let prefix: string | undefined;
  let json = false;
  let once = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "positional") throw new UsageError(`unexpected argument: ${it.text}`);
    if (it.kind === "switch") {
      if (it.flag === "--json") json = true;
      else once = true;
    } else if (it.flag === "--name") name = it.value;
    else if (it.flag === "--prefix") prefix = it.value;
  }
  if (name !== undefined && prefix !== undefined) {
    throw new UsageError("--name cannot be combined with --prefix");
  }
  if (name !== undefined) checkName(name);
  if (prefix !== undefined && prefix === "") throw new UsageError("--prefix must not be empty");
  const target: WatchTarget = name !== undefined
    ? { name }
    : prefix !== undefined
    ? { prefix }
    : {};
  return { socket: s.socket, target, jobFlag: s.jobFlag, json, once, timeoutMs: s.timeoutMs };
}

/** A CLOCK_REALTIME time in ns as ISO 8601 UTC with nanoseconds. */
export function isoTime(ns: bigint): string {
  const seconds = ns / 1_000_000_000n;
  const date = new Date(Number(seconds) * 1000);
  const fraction = String(ns % 1_000_000_000n).padStart(9, "0");
  return Number.isNaN(date.getTime()) ? "-" : `${date.toISOString().slice(0, 19)}.${fraction}Z`;
}

/** The text line of one event (with its newline). */
export function eventLine(e: BusEvent): string {
  const name = e.kind === "missed" && e.name === "" ? "*" : e.name;
  return `${isoTime(e.timeNs)}\t${e.kind}\t${e.id}\t${e.size}\t${
    e.digest ?? "-"
  }\t${e.missed}\t${name}\n`;
}

/** The JSON line of one event. */
export function eventJson(e: BusEvent): string {
  return jsonLine({
    kind: e.kind,
    id: e.id,
    name: e.name,
    size: e.size,
    digest: e.digest,
    time: isoTime(e.timeNs),
    time_ns: String(e.timeNs),
    missed: e.missed,
  });
}

/**
 * Run `watch`; returns the exit code.
 *
 * @param args the arguments after `watch`
 * @param write where lines go (stdout by default)
 * @param signal stops the watch (SIGINT and SIGTERM also do)
 */
export async function watchCommand(
  args: readonly string[],
  write: (line: string) => void = out,
  signal?: AbortSignal,
): Promise<number> {
  const parsed = parseWatchArgs(args);
  const job = resolveJob(parsed.jobFlag);
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  signal?.addEventListener("abort", onSignal, { once: true });
  try {
    const connect = (): Promise<Connection> => Connection.connect(parsed.socket, parsed.timeoutMs);
    const conn = await connect();
    // After a broker's --takeover the watch reconnects to its successor by itself.
    using watch = await Watch.open(conn, parsed.target, {
      job,
      signal: stop.signal,
      reconnect: connect,
      timeoutMs: parsed.timeoutMs,
    });
    for await (const e of watch) {
      write(parsed.json ? eventJson(e) : eventLine(e));
      if (parsed.once) break;
    }
    return 0;
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
    signal?.removeEventListener("abort", onSignal);
  }
}
