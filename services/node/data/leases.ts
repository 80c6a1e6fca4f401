// MRSW on a gRPC Data session: Acquire takes write ownership from the dispatcher's MRSW master through the node's
// NodeConsistency (the same calls the Node service proxies for mmap apps), and the session keeps the lease: at most
// one per session, its certificate riding on every commit exactly as the shim path passes it to the engine.
import * as grpc from '@grpc/grpc-js';
import { failedPrecondition, notFound, RpcError } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import type { DataAcquireRequest__Output } from '../../generated/hotpot/v1/DataAcquireRequest.ts';
import type { DataAcquireResponse } from '../../generated/hotpot/v1/DataAcquireResponse.ts';
import type { NodeConsistency } from '../consistency-service.ts';
import { PAGE_SIZE } from '../../common/page.ts';
import type { Session, SessionTable } from './sessions.ts';
import { checkAcquireRanges } from './validate.ts';

export interface LeaseContext {
  consistency: NodeConsistency;
  sessions: SessionTable;
  log: Logger;
}

/** Acquire: owns the pages of the ranges for `lease_ms`, then syncs the session like Refresh. */
export async function acquireLease(
  c: LeaseContext,
  s: Session,
  req: Pick<DataAcquireRequest__Output, 'ranges' | 'leaseMs' | 'waitMs'>,
): Promise<DataAcquireResponse> {
  if (s.mode !== 'mrsw') throw failedPrecondition(`dataset '${s.name}' is MRMW: acquire is for MRSW datasets`);
  if (s.lease) {
    throw failedPrecondition(
      `this session already holds lease ${s.lease.id}: release it first (one lease per session)`,
    );
  }
  const ranges = checkAcquireRanges(s, req.ranges);
  // lease_ms and wait_ms are checked by the master (one set of limits for both paths).
  const r = await c.consistency.acquire({
    dataset: s.name,
    ranges,
    leaseMs: req.leaseMs,
    waitMs: req.waitMs,
    holder: `data session from ${s.peer}`,
  });
  const l = r.lease;
  if (!l) throw new RpcError(grpc.status.INTERNAL, 'the MRSW master answered acquire without a lease');
  s.lease = { id: l.leaseId, certificate: l.certificate };
  if (s.closed) {
    // The node closed the session (idle sweep or shutdown) while the master was answering.
    await c.sessions.releaseLease(s, 'session closed during acquire');
    throw notFound('session closed');
  }
  // As the SDK's acquire: sync so reads show the latest committed bytes of the pages now owned.
  s.pages.refresh();
  c.log.info({ dataset: s.name, lease: l.leaseId, epoch: l.fencingEpoch }, 'data session acquired');
  return {
    leaseId: l.leaseId,
    fencingEpoch: l.fencingEpoch,
    expiresUnixMs: l.expiresUnixMs,
    ranges: l.pages.map((p) => ({ offset: p.firstPage * PAGE_SIZE, length: p.count * PAGE_SIZE })),
  };
}

/** Release: gives the lease back (`released` false when none was held); on failure the session keeps it. */
export async function releaseLease(c: LeaseContext, s: Session): Promise<{ released: boolean }> {
  const l = s.lease;
  if (!l) return { released: false };
  s.lease = null;
  try {
    await c.consistency.release({ leaseId: l.id });
  } catch (e) {
    // Still held at the master as far as we know: keep it, so a retry (or Close) can release it.
    if (!s.closed) s.lease = l;
    throw e;
  }
  c.log.info({ dataset: s.name, lease: l.id }, 'data session lease released');
  return { released: true };
}
