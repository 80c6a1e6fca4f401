import test from 'ava';
import { isLoopback } from '../../services/dashboard/index.ts';

test('only loopback addresses count as loopback for the dashboard', (t) => {
  for (const h of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) t.true(isLoopback(h), h);
  for (const h of ['0.0.0.0', '10.0.0.1', '::', '128.0.0.1', 'example.com', '::ffff:10.0.0.1'])
    t.false(isLoopback(h), h);
});
