import { createRequire } from 'node:module';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import test from 'ava';
import { clientSecurity } from '../../services/cli/client.ts';
import { channelSecurity } from '../../services/common/tls.ts';
import { startDispatcher, startNode, tempDir } from '../helpers/cluster.ts';

interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}
type ReflectionClient = grpc.Client & {
  ServerReflectionInfo: () => grpc.ClientDuplexStream<{ listServices: string }, ReflectionResponse>;
};

const require = createRequire(import.meta.url);
const reflectionProto = join(
  dirname(require.resolve('@grpc/reflection/package.json')),
  'build/proto/grpc/reflection/v1/reflection.proto',
);
const ServerReflection = (
  grpc.loadPackageDefinition(protoLoader.loadSync(reflectionProto, { keepCase: false, defaults: true })) as unknown as {
    grpc: {
      reflection: {
        v1: { ServerReflection: new (...a: ConstructorParameters<typeof grpc.Client>) => ReflectionClient };
      };
    };
  }
).grpc.reflection.v1.ServerReflection;

/** The services a server lists through gRPC server reflection (v1), as a grpcurl `list` would. */
async function listServices(address: string, role: 'dispatcher' | 'node'): Promise<string[]> {
  const { credentials, options } = channelSecurity(clientSecurity(), role);
  const c = new ServerReflection(address, credentials, options);
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const call = c.ServerReflectionInfo();
      call.on('data', (r: ReflectionResponse) => {
        if (r.listServicesResponse) resolve(r.listServicesResponse.service.map((s) => s.name).sort());
        else reject(new Error(`reflection answered ${JSON.stringify(r.errorResponse)}`));
        call.end();
      });
      call.on('error', reject);
      call.write({ listServices: '' });
    });
  } finally {
    c.close();
  }
}

const STANDARD = [
  'grpc.health.v1.Health',
  'grpc.reflection.v1.ServerReflection',
  'grpc.reflection.v1alpha.ServerReflection',
];

test.serial('reflection lists exactly the services each server answers', async (t) => {
  t.timeout(60_000);
  const dir = tempDir(t);
  const d = await startDispatcher(t, { stateDir: join(dir, 'd') });
  const pool = join('/dev/shm', `hotpot-test-refl-${String(process.pid)}-${dir.slice(-6)}`);
  t.teardown(() => {
    rmSync(pool, { recursive: true, force: true });
  });
  const n = await startNode(t, {
    dispatcher: d.address,
    name: 'r',
    stateDir: join(dir, 'n'),
    extra: ['--pool-dir', pool],
  });
  t.deepEqual(await listServices(d.address, 'dispatcher'), ['hotpot.v1.Dispatcher', ...STANDARD].sort());
  t.deepEqual(await listServices(n.address, 'node'), ['hotpot.v1.Data', 'hotpot.v1.Node', ...STANDARD].sort());
});
