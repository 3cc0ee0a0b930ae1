/**
 * Bench fixtures: a strata store with a 300-path closure (a chain, each path ~4 KiB and
 * referring to the previous one) plus optional big paths, the same closure as a static file://
 * cache (compression none) for nginx, and nginx itself on a loopback port.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import type { StorePath } from '../src/core/store-path.js';
import { copyPaths } from '../src/store/copy.js';
import type { LocalStore } from '../src/store/local/local-store.js';
import { openStore } from '../src/store/open.js';

export const ROOT = join(import.meta.dirname, '..');

/** Adds a chain of `n` text paths to `store`; returns them, the last being the top. */
export async function addChain(store: LocalStore, n: number): Promise<StorePath[]> {
  const out: StorePath[] = [];
  for (let i = 0; i < n; i++) {
    const prev = out[i - 1];
    const body = `${prev ? store.storeDir.print(prev) : 'root'}\n${`payload ${i} `.repeat(400)}\n`;
    out.push((await store.addText(`bench-${i}`, body, prev ? [prev] : [])).path);
  }
  return out;
}

/** Writes a static cache of `paths`' closures with compression none. */
export async function writeStaticCache(store: LocalStore, paths: StorePath[], dir: string): Promise<void> {
  const cache = await openStore(`file://${dir}?compression=none`);
  try {
    await copyPaths(store, cache, paths, { recursive: true });
  } finally {
    await cache.close();
  }
}

/** Starts nginx (Debian nginx-light) serving `root` on 127.0.0.1:`port`. */
export async function startNginx(work: string, root: string, port: number): Promise<() => void> {
  const conf = join(work, 'nginx');
  mkdirSync(join(conf, 'tmp'), { recursive: true });
  writeFileSync(
    join(conf, 'nginx.conf'),
    `daemon off;
user root;
worker_processes 1;
pid ${conf}/nginx.pid;
error_log ${conf}/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${conf}/tmp; proxy_temp_path ${conf}/tmp; fastcgi_temp_path ${conf}/tmp; uwsgi_temp_path ${conf}/tmp; scgi_temp_path ${conf}/tmp;
  sendfile on; tcp_nopush on; keepalive_requests 100000; keepalive_timeout 65;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
  server { listen 127.0.0.1:${port}; root ${root}; }
}
`,
  );
  const child = spawn('nginx', ['-c', join(conf, 'nginx.conf'), '-p', conf], { stdio: 'ignore' });
  await waitForPort(port);
  return () => child.kill('SIGTERM');
}

/** Starts `strata serve` as its own process; returns its URL and a stop function. */
export async function startStrata(storeRoot: string, port: number, extra: string[] = []): Promise<{ url: string; child: ChildProcess; stop: () => void }> {
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'strata'), '--quiet', '--store', storeRoot, 'serve', '--listen', `127.0.0.1:${port}`, ...extra], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.on('exit', (c) => reject(new Error(`strata serve exited ${c}`)));
  });
  return { url, child, stop: () => child.kill('SIGTERM') };
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/nix-cache-info`);
      await r.arrayBuffer();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Real Nix's environment: private config, fresh narinfo cache. */
export function nixEnv(work: string): NodeJS.ProcessEnv {
  const conf = join(work, 'nixconf');
  mkdirSync(join(conf, 'xdg'), { recursive: true });
  writeFileSync(join(conf, 'nix.conf'), 'build-users-group =\nsandbox = false\nexperimental-features = nix-command\nsubstituters =\nrequire-sigs = true\n');
  const env: NodeJS.ProcessEnv = { ...process.env, NIX_CONF_DIR: conf, XDG_CACHE_HOME: join(conf, `xdg-${Date.now()}`) };
  delete env['NIX_REMOTE'];
  return env;
}

export function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv): number {
  const t = performance.now();
  const r = spawnSync(cmd, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.toString().slice(-400)}`);
  return (performance.now() - t) / 1000;
}
