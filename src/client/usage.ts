/**
 * The client's USAGE request (an extension): one exchange, the JSON body parsed. A broker that
 * does not know the command (a C broker) makes it throw {@link UnsupportedError}.
 *
 * @module
 */

import { UnsupportedError } from "../errors.ts";
import { Cmd, encodeHeader } from "../protocol/wire.ts";
import { parseUsage, type UsageReport } from "../protocol/usage.ts";
import { isUnknownCommand, replyText, type RequestLink } from "./request.ts";

/** One USAGE exchange as `job` (empty: none). */
export async function usageRequest(link: RequestLink, job: Uint8Array): Promise<UsageReport> {
  const header = encodeHeader({ cmd: Cmd.USAGE, jobLen: job.length });
  let r;
  try {
    r = await link.requester.exchange(
      [[header, "send usage request"], [job, "send job id"]],
      [],
      link.timeoutMs,
    );
  } catch (e) {
    if (isUnknownCommand(e)) throw new UnsupportedError("usage");
    throw e;
  }
  return await replyText(r, link.timeoutMs, "receive usage", parseUsage);
}
