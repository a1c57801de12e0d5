// Entry point: `serve` (default), and the developer subcommands dispatched by src/commands/cli.ts.

import { runCli } from "./src/commands/cli.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args));
}
