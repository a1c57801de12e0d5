// Entry point: `serve` (default), and the developer subcommands wired in src/cli.ts.

import { runCli } from "./src/commands/cli.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
