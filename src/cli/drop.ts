/**
 * `memfdbus drop OBJECT_ID` / `drop --name NAME`: remove an object and print its id (with
 * `--json`, `{id, size}`).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import {
  checkName,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  parseId,
  resolveJob,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";
import { DROP_USAGE } from "./usage.ts";

/** Run `drop`; returns the exit code. */
export async function dropCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, { ...CLIENT_FLAGS, name: "string", json: "boolean" });
  const s = clientDefaults();
  let name: string | undefined;
  let id: bigint | undefined;
  let json = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind !== "positional") continue;
    else if (name === undefined && id === undefined) id = parseId(it.text);
    else throw new UsageError(`unexpected argument: ${it.text}`);
  }
  if ((id !== undefined) === (name !== undefined)) throw new UsageError(DROP_USAGE);
  if (name !== undefined) checkName(name);
  const job = resolveJob(s.jobFlag);

  await using client = cliClient(s, job);
  const r = await client.drop(id !== undefined ? id : { name: name ?? "" });
  out(json ? jsonLine({ id: r.id, size: r.size }) : `${r.id}\n`);
  return 0;
}
