// `hotpot dashboard`: serves a live web page of the cluster from this process (see docs/dashboard.md).
import { isIP } from 'node:net';
import { InvalidArgumentError, type Command } from 'commander';
import { clientSecurity, dispatcherAddress } from './client.ts';

function intOption(name: string, min: number, max: number) {
  return (v: string): number => {
    const n = /^\d{1,9}$/.test(v) ? Number(v) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`${name} must be an integer from ${String(min)} to ${String(max)}`);
    }
    return n;
  };
}

function hostOption(v: string): string {
  if (v !== 'localhost' && isIP(v) === 0) throw new InvalidArgumentError('an IP address (or localhost)');
  return v;
}

/** Adds `hotpot dashboard` to the CLI; `dispatcherFlag` reads the global --dispatcher. */
export function registerDashboard(program: Command, dispatcherFlag: () => string | undefined): void {
  program
    .command('dashboard')
    .description('serve a live web page of the cluster: nodes, datasets, chunk maps, rates, latency, events')
    .option('--port <port>', 'HTTP port (0: any free port)', intOption('--port', 0, 65535), 8080)
    .option('--listen <ip>', 'interface to listen on', hostOption, '127.0.0.1')
    .option(
      '--allow-non-loopback',
      'allow --listen on a non-loopback address: anyone who reaches it sees the cluster (no login)',
    )
    .option('--interval <ms>', 'how often the cluster is sampled', intOption('--interval', 250, 60_000), 2000)
    .action(async (o: { port: number; listen: string; allowNonLoopback?: boolean; interval: number }) => {
      const { startDashboard } = await import('../dashboard/index.ts');
      const dispatcher = dispatcherAddress(dispatcherFlag());
      const { url, dashboard } = await startDashboard({
        dispatcher,
        security: clientSecurity(),
        host: o.listen,
        port: o.port,
        allowNonLoopback: o.allowNonLoopback === true,
        intervalMs: o.interval,
      });
      process.stdout.write(`hotpot dashboard: ${url} (cluster at ${dispatcher}; Ctrl-C stops it)\n`);
      process.stdout.write(`READY url=${url}\n`);
      const stop = (): void => {
        void dashboard.close().finally(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      return new Promise<void>(() => undefined);
    });
}
