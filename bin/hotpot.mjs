#!/usr/bin/env node
// Entry point of the `hotpot` command. Runs the TypeScript sources through tsx, and sets up OpenTelemetry
// before anything imports @grpc/grpc-js (the instrumentation hooks ESM imports).
import { register } from 'tsx/esm/api';

register();
// A reader that went away (`hotpot events | head`) ends the command quietly, as a closed pipe ends other tools.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});
// The subcommand: the first argument that is neither a global option nor the value of one (--dispatcher X).
const role = (() => {
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--dispatcher') i++;
    else if (!args[i].startsWith('-')) return args[i];
  }
  return undefined;
})();
const service = role === 'dispatcher' ? 'hotpot-dispatcher' : role === 'node' ? 'hotpot-node' : 'hotpot-cli';
const { initTelemetry, shutdownTelemetry } = await import('../services/common/telemetry.ts');
try {
  await initTelemetry(service);
} catch (e) {
  process.stderr.write(`hotpot: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
}
const { main } = await import('../services/cli/main.ts');
const code = await main(process.argv);
if (code !== undefined) {
  await shutdownTelemetry();
  // Writes to a pipe are asynchronous: exiting at once cut long output (--json of a large dataset) short.
  await new Promise((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}
