/**
 * Substituting a 300-path closure into a fresh store: real Nix 2.8 (`nix-store -r`) vs
 * `strata copy -r`, both from the same server (strata serve, and nginx serving the same closure
 * as a static cache). Run: `npx tsx bench/substitute.ts`.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';
import {
  addChain,
  nixEnv,
  ROOT,
  startNginx,
  startStrata,
  timed,
  writeStaticCache,
} from './_fixture.js';

const work = mkdtempSync(join(tmpdir(), 'strata-bench-subst-'));
const storeRoot = join(work, 'store');
const store = (await openStore(storeRoot)) as LocalStore;
const chain = await addChain(store, 300);
const top = store.storeDir.print(chain.at(-1)!);
await writeStaticCache(store, [chain.at(-1)!], join(work, 'static'));
await store.close();

const stopNginx = await startNginx(work, join(work, 'static'), 18491);
const strata = await startStrata(storeRoot, 18492, ['--compression', 'none']);
const servers = { 'strata serve': strata.url, nginx: 'http://127.0.0.1:18491' };
const out: Record<string, unknown> = {};
let n = 0;
try {
  for (const [name, url] of Object.entries(servers)) {
    const nix: number[] = [];
    const st: number[] = [];
    for (let i = 0; i < 3; i++) {
      nix.push(
        timed(
          'nix-store',
          [
            '--store',
            join(work, `nix-${++n}`),
            '-r',
            top,
            '--option',
            'substituters',
            url,
            '--option',
            'require-sigs',
            'false',
          ],
          nixEnv(work),
        ),
      );
      st.push(
        timed(
          process.execPath,
          [
            join(ROOT, 'bin', 'strata'),
            '--no-progress',
            '--quiet',
            '--no-require-sigs',
            'copy',
            '--from',
            `${url}?ttl-negative=0&ttl-positive=0`,
            '--to',
            join(work, `strata-${n}`),
            '-r',
            top,
          ],
          { ...process.env, XDG_CACHE_HOME: join(work, `xdg-${n}`) },
        ),
      );
    }
    out[name] = {
      nixBestS: Math.min(...nix),
      strataBestS: Math.min(...st),
      nixRuns: nix,
      strataRuns: st,
      speedup: Math.min(...nix) / Math.min(...st),
    };
  }
  out['loadAverage'] = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(JSON.stringify(out, null, 2));
  for (const name of Object.keys(servers)) {
    const r = out[name] as { nixBestS: number; strataBestS: number; speedup: number };
    console.log(
      `${name}: nix-store -r ${r.nixBestS.toFixed(2)} s, strata copy -r ${r.strataBestS.toFixed(2)} s (best of 3): strata speed-up ${r.speedup.toFixed(2)}x (target 1.5x: ${r.speedup >= 1.5 ? 'met' : 'not met'})`,
    );
  }
} finally {
  strata.stop();
  stopNginx();
  rmSync(work, { recursive: true, force: true });
}
