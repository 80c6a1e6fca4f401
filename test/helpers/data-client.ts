// A grpc-js client of hotpot.v1.Data for tests: unary calls resolve to the response or reject with a CallError
// {code name, details, metadata}; streams are collected.
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { hotpotV1, type DataClient } from '../../services/common/proto.ts';
import { channelFor, type Security } from '../../services/common/tls.ts';
import { clientSecurity } from '../../services/cli/client.ts';
import './cluster.ts';
import type { DataOpenRequest } from '../../services/generated/hotpot/v1/DataOpenRequest.ts';
import type { DataOpenResponse__Output } from '../../services/generated/hotpot/v1/DataOpenResponse.ts';
import type { DataReadRequest } from '../../services/generated/hotpot/v1/DataReadRequest.ts';
import type { DataReadResponse__Output } from '../../services/generated/hotpot/v1/DataReadResponse.ts';
import type { DataWriteRequest } from '../../services/generated/hotpot/v1/DataWriteRequest.ts';
import type { DataWriteResponse__Output } from '../../services/generated/hotpot/v1/DataWriteResponse.ts';
import type { DataCommitRequest } from '../../services/generated/hotpot/v1/DataCommitRequest.ts';
import type { DataCommitResponse__Output } from '../../services/generated/hotpot/v1/DataCommitResponse.ts';
import type { DataRollbackRequest } from '../../services/generated/hotpot/v1/DataRollbackRequest.ts';
import type { DataRollbackResponse__Output } from '../../services/generated/hotpot/v1/DataRollbackResponse.ts';
import type { DataRefreshRequest } from '../../services/generated/hotpot/v1/DataRefreshRequest.ts';
import type { DataRefreshResponse__Output } from '../../services/generated/hotpot/v1/DataRefreshResponse.ts';
import type { DataCloseRequest } from '../../services/generated/hotpot/v1/DataCloseRequest.ts';
import type { DataCloseResponse__Output } from '../../services/generated/hotpot/v1/DataCloseResponse.ts';
import type { DataAcquireRequest } from '../../services/generated/hotpot/v1/DataAcquireRequest.ts';
import type { DataAcquireResponse__Output } from '../../services/generated/hotpot/v1/DataAcquireResponse.ts';
import type { DataReleaseRequest } from '../../services/generated/hotpot/v1/DataReleaseRequest.ts';
import type { DataReleaseResponse__Output } from '../../services/generated/hotpot/v1/DataReleaseResponse.ts';
import type { DataBarrierRequest } from '../../services/generated/hotpot/v1/DataBarrierRequest.ts';
import type { DataBarrierResponse__Output } from '../../services/generated/hotpot/v1/DataBarrierResponse.ts';

const MiB = 1024 * 1024;

export class CallError extends Error {
  constructor(
    readonly code: string,
    readonly details: string,
    readonly metadata: grpc.Metadata | undefined,
  ) {
    super(`${code}: ${details}`);
  }
}

/** A Data client whose unary calls resolve to the response or reject with {code name, details, metadata}. */
export function dataClient(t: ExecutionContext, address: string, security: Security = clientSecurity()) {
  const { credentials, options } = channelFor(address, security, 'node');
  const c: DataClient = new hotpotV1.Data(address, credentials, {
    ...options,
    'grpc.max_receive_message_length': 4 * MiB,
  });
  t.teardown(() => {
    // Not c.close() (nor grpc.closeClient): proto-loader adds lowercase method aliases, so `close` is the Close RPC.
    grpc.Client.prototype.close.call(c);
  });
  const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + 30_000 });
  const toErr = (e: grpc.ServiceError): CallError => new CallError(grpc.status[e.code], e.details, e.metadata);
  function call<Req, Res>(
    m: (req: Req, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Res) => void) => unknown,
  ): (req: Req) => Promise<Res> {
    return (req) =>
      new Promise((resolve, reject) => {
        m(req, deadline(), (e, r) => {
          if (e) reject(toErr(e));
          else if (r === undefined) reject(new Error('empty response'));
          else resolve(r);
        });
      });
  }
  return {
    raw: c,
    open: call<DataOpenRequest, DataOpenResponse__Output>((r, o, cb) => c.Open(r, o, cb)),
    read: call<DataReadRequest, DataReadResponse__Output>((r, o, cb) => c.Read(r, o, cb)),
    write: call<DataWriteRequest, DataWriteResponse__Output>((r, o, cb) => c.Write(r, o, cb)),
    commit: call<DataCommitRequest, DataCommitResponse__Output>((r, o, cb) => c.Commit(r, o, cb)),
    rollback: call<DataRollbackRequest, DataRollbackResponse__Output>((r, o, cb) => c.Rollback(r, o, cb)),
    refresh: call<DataRefreshRequest, DataRefreshResponse__Output>((r, o, cb) => c.Refresh(r, o, cb)),
    close: call<DataCloseRequest, DataCloseResponse__Output>((r, o, cb) => c.Close(r, o, cb)),
    acquire: call<DataAcquireRequest, DataAcquireResponse__Output>((r, o, cb) => c.Acquire(r, o, cb)),
    release: call<DataReleaseRequest, DataReleaseResponse__Output>((r, o, cb) => c.Release(r, o, cb)),
    barrier: call<DataBarrierRequest, DataBarrierResponse__Output>((r, o, cb) => c.Barrier(r, o, cb)),
    /** ReadStream collected: every message's offset and length, and the bytes. */
    async readStream(session: string, offset: number, length: number, snapshot = false) {
      const s = c.ReadStream({ session, offset, length, snapshot }, deadline());
      const sizes: number[] = [];
      const parts: Buffer[] = [];
      let expect = offset;
      await new Promise<void>((resolve, reject) => {
        s.on('data', (m: { offset: number; data: Buffer }) => {
          if (m.offset !== expect)
            reject(new Error(`stream message at ${String(m.offset)}, expected ${String(expect)}`));
          expect += m.data.length;
          sizes.push(m.data.length);
          parts.push(m.data);
        });
        s.on('error', (e: grpc.ServiceError) => {
          reject(toErr(e));
        });
        s.on('end', resolve);
      });
      return { sizes, data: Buffer.concat(parts) };
    },
    writeStream(pieces: { session: string; offset: number; data: Buffer }[]) {
      return new Promise<{ bytesWritten: number; privatePages: number }>((resolve, reject) => {
        const s = c.WriteStream(deadline(), (e, r) => {
          if (e) reject(toErr(e));
          else if (r) resolve(r);
          else reject(new Error('empty response'));
        });
        s.on('error', () => undefined);
        for (const p of pieces) s.write(p);
        s.end();
      });
    },
  };
}
