// A session of a node's gRPC Data service (proto/hotpot/v1/data.proto) for the CLI's data commands: unary calls as
// promises with deadlines, ReadStream as an async iterator and WriteStream with backpressure. Errors are HotpotError.
import * as grpc from '@grpc/grpc-js';
import { fromServiceError, HotpotError } from '../common/errors.ts';
import { hotpotV1, type DataClient } from '../common/proto.ts';
import { unary } from '../common/rpc.ts';
import type { DataCommitResponse__Output } from '../generated/hotpot/v1/DataCommitResponse.ts';
import type { DataOpenRequest } from '../generated/hotpot/v1/DataOpenRequest.ts';
import type { DataOpenResponse__Output } from '../generated/hotpot/v1/DataOpenResponse.ts';
import type { DataReadResponse__Output } from '../generated/hotpot/v1/DataReadResponse.ts';
import type { DataWriteResponse__Output } from '../generated/hotpot/v1/DataWriteResponse.ts';
import type { DataAcquireResponse__Output } from '../generated/hotpot/v1/DataAcquireResponse.ts';
import { channelFor } from '../common/tls.ts';
import { clientSecurity } from './client.ts';

/** Largest Read and largest data of one Write / stream message (the node's max_message_bytes). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Deadline of a short call (Open, Commit, Close...): a commit of many MiB to N nodes can take a while. */
const CALL_DEADLINE_MS = 120_000;
/** A stream's deadline: a minute plus a second per MiB (far slower than any working link). */
const streamDeadline = (bytes: number): number => Date.now() + 60_000 + Math.ceil(bytes / MAX_MESSAGE_BYTES) * 1000;

const CONNECTION_CODES = new Set(['UNAVAILABLE', 'UNAUTHENTICATED', 'DEADLINE_EXCEEDED']);

export interface OpenedSession {
  session: string;
  sizeBytes: number;
  mode: string;
  replicas: number;
  chunkSizeBytes: number;
}

/** One Data session on one node; `end()` closes it (its uncommitted changes dropped) and the channel. */
export class DataSession {
  private constructor(
    private readonly client: DataClient,
    readonly info: OpenedSession,
  ) {}

  static async open(address: string, req: DataOpenRequest): Promise<DataSession> {
    const { credentials, options } = channelFor(address, clientSecurity(), 'node');
    const client: DataClient = new hotpotV1.Data(address, credentials, {
      ...options,
      'grpc.max_receive_message_length': 4 * MAX_MESSAGE_BYTES,
    });
    try {
      const r = await unary<DataOpenResponse__Output>((o, cb) => client.Open(req, o, cb), CALL_DEADLINE_MS);
      return new DataSession(client, {
        session: r.session,
        sizeBytes: r.sizeBytes,
        mode: r.mode,
        replicas: r.replicas,
        chunkSizeBytes: r.chunkSizeBytes,
      });
    } catch (e) {
      closeChannel(client);
      // Name the node: a connection error's text from grpc-js often does not.
      if (e instanceof HotpotError && CONNECTION_CODES.has(e.code) && !e.message.includes(address)) {
        throw new HotpotError(e.code, `${e.message} (node at ${address})`);
      }
      throw e;
    }
  }

  get session(): string {
    return this.info.session;
  }

  /** Reads [offset, offset+length) as messages of at most 1 MiB in offset order. */
  async *read(offset: number, length: number, snapshot: boolean): AsyncGenerator<Buffer> {
    if (length === 0) return;
    const s = this.client.ReadStream(
      { session: this.session, offset, length, snapshot },
      { deadline: streamDeadline(length) },
    );
    let expect = offset;
    try {
      for await (const m of s as AsyncIterable<DataReadResponse__Output>) {
        if (m.offset !== expect) {
          throw new Error(`the node sent bytes at offset ${String(m.offset)}, expected ${String(expect)}`);
        }
        expect += m.data.length;
        yield m.data;
      }
    } catch (e) {
      throw isServiceError(e) ? fromServiceError(e) : e;
    } finally {
      s.cancel();
    }
    if (expect !== offset + length) {
      throw new Error(`the node ended the read at ${String(expect)}, expected ${String(offset + length)}`);
    }
  }

  /** Writes `pieces` (each at most 1 MiB, at their offsets) into the session's private changes, in order. */
  async write(pieces: AsyncIterable<{ offset: number; data: Buffer }>, totalBytes: number): Promise<number> {
    let failed: unknown = null;
    const done = new Promise<DataWriteResponse__Output>((resolve, reject) => {
      const s = this.client.WriteStream({ deadline: streamDeadline(totalBytes) }, (e, r) => {
        if (e) reject(fromServiceError(e));
        else if (r) resolve(r);
        else reject(new Error('empty WriteStream response'));
      });
      // The call's callback reports the error; this only keeps an 'error' event from being unhandled.
      s.on('error', () => undefined);
      void (async () => {
        try {
          for await (const p of pieces) {
            if (!s.write({ session: this.session, offset: p.offset, data: p.data })) {
              await new Promise<void>((r) => {
                const go = (): void => {
                  s.off('close', go);
                  s.off('drain', go);
                  r();
                };
                s.once('drain', go);
                s.once('close', go);
              });
            }
          }
          s.end();
        } catch (e) {
          failed = e;
          s.cancel();
        }
      })();
    });
    try {
      return (await done).bytesWritten;
    } catch (e) {
      // Our own input failed (a read error of the file): that, not the CANCELLED it caused, is the cause.
      throw failed ?? e;
    }
  }

  async commit(reads: { offset: number; length: number }[] = []): Promise<DataCommitResponse__Output> {
    return unary<DataCommitResponse__Output>(
      (o, cb) => this.client.Commit({ session: this.session, reads }, o, cb),
      CALL_DEADLINE_MS,
    );
  }

  async rollback(): Promise<void> {
    await unary((o, cb) => this.client.Rollback({ session: this.session }, o, cb), CALL_DEADLINE_MS);
  }

  /** MRSW: write ownership of the pages covering [offset, offset+length) for this session. */
  async acquire(offset: number, length: number, leaseMs: number, waitMs: number): Promise<DataAcquireResponse__Output> {
    return unary<DataAcquireResponse__Output>(
      (o, cb) => this.client.Acquire({ session: this.session, ranges: [{ offset, length }], leaseMs, waitMs }, o, cb),
      CALL_DEADLINE_MS + waitMs,
    );
  }

  async release(): Promise<void> {
    await unary((o, cb) => this.client.Release({ session: this.session }, o, cb), CALL_DEADLINE_MS);
  }

  /** Closes the session (uncommitted changes dropped) and the channel; never throws (the node drops idle ones). */
  async end(): Promise<void> {
    try {
      await unary((o, cb) => this.client.Close({ session: this.session }, o, cb), 10_000);
    } catch {
      // Best effort: an unreachable node closes the idle session itself.
    } finally {
      closeChannel(this.client);
    }
  }
}

function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as Partial<grpc.ServiceError>).code === 'number' && 'details' in e;
}

// Not client.close(): proto-loader adds lowercase method aliases, so `close` is the Close RPC.
function closeChannel(c: DataClient): void {
  grpc.Client.prototype.close.call(c);
}
