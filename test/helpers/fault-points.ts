// Fault points for the tests, read from the one list the engine's test build compiles in
// (native/src/common/fault_points.def; common/fault_points.h). A node started with faultEnv(name) exits with
// FAULT_EXIT_CODE when a thread reaches that point (or, with pauseMs, pauses the first thread there once). Only the
// test addon has fault points: the tests run with HOTPOT_TEST_ADDON=1 (package.json "ava" config) and faultEnv sets
// it too, so a node given a fault point never runs the release addon, which would ignore it.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface FaultPointDef {
  /** The C++ enumerator (FaultPoint::kOwnerAfterLocalApply). */
  id: string;
  /** The HOTPOT_FAULT_POINT spelling. */
  name: string;
  /** What has and has not happened when a thread reaches it. */
  where: string;
}

const commonDir = (file: string) => fileURLToPath(new URL(`../../native/src/common/${file}`, import.meta.url));

function parseDefs(text: string): FaultPointDef[] {
  const defs: FaultPointDef[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('HOTPOT_FAULT_POINT_DEF(')) continue;
    const m = /^HOTPOT_FAULT_POINT_DEF\((\w+), "([^"]+)", "([^"]*)"\)$/.exec(line.trim());
    const [, id, name, where] = m ?? [];
    if (id === undefined || name === undefined || where === undefined) {
      throw new Error(`fault_points.def: cannot read "${line}"`);
    }
    defs.push({ id, name, where });
  }
  if (defs.length === 0) throw new Error('fault_points.def lists no fault point');
  return defs;
}

/** Every fault point, in the order of fault_points.def. */
export const FAULT_POINTS: readonly FaultPointDef[] = parseDefs(readFileSync(commonDir('fault_points.def'), 'utf8'));

/** The exit status of a node stopped at a fault point (kFaultExitCode in common/fault_points.h). */
export const FAULT_EXIT_CODE: number = (() => {
  const m = /constexpr int kFaultExitCode = (\d+);/.exec(readFileSync(commonDir('fault_points.h'), 'utf8'));
  if (!m?.[1]) throw new Error('fault_points.h: kFaultExitCode not found');
  return Number(m[1]);
})();

/** The fault point called `name`; throws, listing the known names, for a name not in fault_points.def. */
export function faultPoint(name: string): FaultPointDef {
  const def = FAULT_POINTS.find((p) => p.name === name);
  if (!def) {
    throw new Error(`no fault point "${name}" in fault_points.def (${FAULT_POINTS.map((p) => p.name).join(', ')})`);
  }
  return def;
}

/** Environment for a node process that stops at fault point `name` (or pauses there once for `pauseMs`). */
export function faultEnv(name: string, opts: { pauseMs?: number } = {}): NodeJS.ProcessEnv {
  const point = faultPoint(name).name;
  return {
    HOTPOT_TEST_ADDON: '1',
    HOTPOT_FAULT_POINT: opts.pauseMs === undefined ? point : `${point}:pause=${String(opts.pauseMs)}`,
  };
}
