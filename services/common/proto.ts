// Loads the hotpot.v1 contract at run time. Types come from services/generated (proto-loader-gen-types);
// the load options here must match the generator flags in scripts/gen-proto.mjs.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { join } from 'node:path';
import { projectRoot } from './paths.ts';
import type { ProtoGrpcType as DispatcherProto } from '../generated/dispatcher.ts';
import type { ProtoGrpcType as NodeProto } from '../generated/node.ts';
import type { ProtoGrpcType as DataProto } from '../generated/data.ts';

export const PROTO_DIR = join(projectRoot, 'proto');
export const PROTO_FILES = [
  'hotpot/v1/common.proto',
  'hotpot/v1/dispatcher.proto',
  'hotpot/v1/node.proto',
  'hotpot/v1/data.proto',
];

export const loadOptions: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

export const packageDefinition = protoLoader.loadSync(PROTO_FILES, loadOptions);
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as DispatcherProto & NodeProto & DataProto;
export const hotpotV1 = loaded.hotpot.v1;

export const DISPATCHER_SERVICE = 'hotpot.v1.Dispatcher';
export const NODE_SERVICE = 'hotpot.v1.Node';
export const DATA_SERVICE = 'hotpot.v1.Data';

export type { DispatcherClient } from '../generated/hotpot/v1/Dispatcher.ts';
export type { NodeClient } from '../generated/hotpot/v1/Node.ts';
export type { DataClient } from '../generated/hotpot/v1/Data.ts';
