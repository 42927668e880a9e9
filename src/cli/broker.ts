/**
 * `memfdbus broker [...]`: run a broker until SIGINT or SIGTERM.
 *
 * @module
 */

import { Broker } from "../broker.ts";
import { parseBrokerArgs } from "../options.ts";

/** Run the broker; resolves with exit code 0 after a signal stopped it. */
export async function brokerCommand(args: readonly string[]): Promise<number> {
  const options = parseBrokerArgs(args);
  const broker = await Broker.start(options);
  const stop = (): void => void broker.close();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await broker.closed;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}
