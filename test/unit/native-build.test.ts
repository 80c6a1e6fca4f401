// The two builds of the native addon (native/binding.gyp): fault points exist only in the test build, which the tests
// run with (HOTPOT_TEST_ADDON=1, package.json "ava" config); the release build carries none of them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { engineInfo, projectRoot, testAddon } from '../../native/index.ts';
import { PAGE_SIZE } from '../../services/common/page.ts';
import { FAULT_POINTS } from '../helpers/fault-points.ts';

const addonBytes = (target: string) => readFileSync(join(projectRoot, 'native', 'build', 'Release', `${target}.node`));
const faultStrings = [...FAULT_POINTS.map((p) => p.name), 'HOTPOT_FAULT_POINT'];

test('the tests run with the test build of the addon', (t) => {
  t.true(testAddon);
});

test('the test build of the addon carries every fault point of fault_points.def', (t) => {
  const bin = addonBytes('hotpot_native_test');
  t.deepEqual(
    faultStrings.filter((s) => !bin.includes(s)),
    [],
  );
});

test('the release build of the addon carries no fault point', (t) => {
  const bin = addonBytes('hotpot_native');
  t.deepEqual(
    faultStrings.filter((s) => bin.includes(s)),
    [],
  );
});

test('the services page size is the native one', (t) => {
  t.is(engineInfo().pageSize, PAGE_SIZE);
});
