/**
 * 300 sequential GETs of one small file from nginx on loopback, through node:http (a keep-alive
 * Agent, as HttpTransport's full path) and through the lean client (src/store/http-get-pool.ts),
 * in interleaved rounds; medians in ms. Behind the "300 sequential small GETs" figures in
 * BENCHMARKS.md ("Binary caches", eighth session).
 *   npx tsx bench/probes/small-gets.ts [ROUNDS]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { HttpGetPool } from '../../src/store/http-get-pool.js';
import { startNginx } from '../_fixture.js';
import { median } from '../lib/timing.js';

const rounds = Number(process.argv[2] ?? 7);
const port = 18495;
const work = mkdtempSync(join(tmpdir(), 'strata-probe-gets-'));
mkdirSync(join(work, 'root'));
writeFileSync(join(work, 'root', 'file.narinfo'), 'x'.repeat(500));
const stop = await startNginx(work, join(work, 'root'), port);
const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
const viaNodeHttp = () =>
  new Promise<void>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/file.narinfo', agent }, (res) => {
        res.resume();
        res.on('end', resolve);
      })
      .on('error', reject);
  });
const pool = new HttpGetPool('127.0.0.1', port, `127.0.0.1:${port}`, { timeoutMs: 30_000 });
const viaLean = async () => {
  if ((await pool.get('/file.narinfo', 1 << 20)) === undefined) throw new Error('lean GET declined');
};
const times: Record<string, number[]> = { 'node:http': [], lean: [] };
try {
  for (let r = 0; r < rounds; r++) {
    for (const [name, get] of [['node:http', viaNodeHttp], ['lean', viaLean]] as const) {
      const t = performance.now();
      for (let i = 0; i < 300; i++) await get();
      times[name]!.push(performance.now() - t);
    }
  }
  for (const [name, xs] of Object.entries(times)) console.log(`${name}: median ${median(xs).toFixed(1)} ms for 300 GETs (runs ${xs.map((x) => x.toFixed(0)).join(', ')})`);
} finally {
  pool.close();
  agent.destroy();
  stop();
  rmSync(work, { recursive: true, force: true });
}
