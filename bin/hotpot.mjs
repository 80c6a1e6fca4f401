#!/usr/bin/env node
// Entry point of the `hotpot` command. Runs the compiled JavaScript in dist/ (`npm run build`; `npm ci` builds it)
// while it was built from the sources as they are; when dist/ is missing or a source changed since (a developer's
// edit), it runs the TypeScript sources through tsx instead, so an edit is never silently ignored.
// The daemons set up OpenTelemetry before anything imports @grpc/grpc-js (the instrumentation hooks ESM imports).
import { readFileSync } from 'node:fs';
import { builtIsCurrent } from '../scripts/build-status.mjs';

// `hotpot --version` needs none of the code: answered before loading any.
const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
  process.stdout.write(`${String(pkg.version)}\n`);
  process.exit(0);
}

const compiled = builtIsCurrent();
if (!compiled) {
  const { register } = await import('tsx/esm/api');
  register();
}
/** A module of the sources (services/cli/main) as it runs: compiled or TypeScript. */
const source = (path) => (compiled ? `../dist/${path}.js` : `../${path}.ts`);
// A reader that went away (`hotpot events | head`) ends the command quietly, as a closed pipe ends other tools.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});
// The subcommand: the first argument that is neither a global option nor the value of one (--dispatcher X).
const role = (() => {
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--dispatcher') i++;
    else if (!args[i].startsWith('-')) return args[i];
  }
  return undefined;
})();
const service = role === 'dispatcher' ? 'hotpot-dispatcher' : role === 'node' ? 'hotpot-node' : 'hotpot-cli';
// A CLI command that exports no spans (the default) does without OpenTelemetry: its loader hook and the gRPC
// instrumentation more than doubled the start-up of every command, for spans nobody would see.
const exporter = process.env.HOTPOT_TRACES_EXPORTER ?? process.env.OTEL_TRACES_EXPORTER ?? 'none';
const telemetry =
  service !== 'hotpot-cli' || exporter.toLowerCase() !== 'none'
    ? await import(source('services/common/telemetry'))
    : null;
try {
  await telemetry?.initTelemetry(service);
} catch (e) {
  process.stderr.write(`hotpot: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(2);
}
const { main } = await import(source('services/cli/main'));
const code = await main(process.argv);
if (code !== undefined) {
  await telemetry?.shutdownTelemetry();
  // Writes to a pipe are asynchronous: exiting at once cut long output (--json of a large dataset) short.
  await new Promise((resolve) => process.stdout.write('', () => resolve()));
  process.exit(code);
}
