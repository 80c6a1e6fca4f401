// Bytes per page of a dataset: the unit of faults, commits, ownership and replication. The one TypeScript spelling
// of native/src/common/page.h kPageSize (services must not load the addon to learn it); test/unit/native-build.test.ts
// checks the two agree.
export const PAGE_SIZE = 4096;
