// hotpot.v1.Data: read/write/commit by offset for clients in any language (proto/hotpot/v1/data.proto).
//
// A gRPC session is what a mapped process is on the mmap path: one engine session (its sync point decides the
// base images) plus private pages. Here the private pages live in this daemon (whole 4 KiB copies made from the
// base image on first write) instead of in the app's COW mapping, and commit hands them to the same engine Commit
// the shim server uses — one commit protocol. Reads return private pages where the session has them and base
// images elsewhere (committed data as of the sync point, or newer for pages fetched since) — or, with `snapshot`,
// the latest committed state of the node (engine ReadCommitted: every commit whole) elsewhere.
//
// The room, one job a file: service.ts (the handlers), sessions.ts (the session table), overlay.ts (the private
// pages over the engine), leases.ts (MRSW acquire/release), validate.ts (request checks).
export { DataService, type DataServiceOptions } from './service.ts';
