/**
 * The `memfdbus` command: broker, put, get, exec, drop and list (as the C memfdbus), plus stat,
 * capture and shadow.
 *
 * ```sh
 * deno run --allow-ffi --allow-read --allow-write --allow-env cli.ts broker
 * ```
 *
 * @module
 */

import { main } from "./src/cli/main.ts";

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

export { main };
