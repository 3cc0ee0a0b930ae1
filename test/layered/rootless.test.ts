/**
 * A non-root user gets a layered store too: strata runs itself in a user + mount namespace and
 * mounts the overlay there (CI is root, so the test drops to `nobody` with setpriv).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { ensureBuilt, ROOT } from '../support/cli.js';
import { makeLower } from '../support/layered.js';
import { isRoot } from '../support/mounts.js';
import { tempDir } from '../support/tmp.js';

const canDrop = isRoot && spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'unshare', '--user', '--map-root-user', '--mount', 'true']).status === 0;

describe.runIf(canDrop)('rootless layered store', () => {
  it('init, add and query as nobody, inside a user namespace, and says so', async () => {
    ensureBuilt();
    const work = tempDir();
    chmodSync(work, 0o755);
    const lower = await makeLower(join(work, 'lower'));
    spawnSync('chmod', ['-R', 'a+rX', lower.root]);
    const data = join(work, 'data');
    mkdirSync(data);
    chmodSync(data, 0o777);
    writeFileSync(join(data, 'f.txt'), 'from nobody\n');
    const run = (...args: string[]) =>
      spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'env', `HOME=${data}`, `XDG_CACHE_HOME=${data}/cache`, process.execPath, join(ROOT, 'bin/strata'), ...args], { cwd: data, encoding: 'utf8' });
    const dir = join(data, 'L');
    const init = run('init', dir, '--lower', lower.root);
    expect(init.status, init.stderr).toBe(0);
    expect(init.stderr).toContain('mount: user-namespace');
    const add = run('--store', `layered://${dir}`, 'add', join(data, 'f.txt'));
    expect(add.status, add.stderr).toBe(0);
    const added = add.stdout.trim();
    expect(readdirSync(join(dir, 'upper'))).toEqual([added.slice('/nix/store/'.length)]);
    const info = run('--store', `layered://${dir}`, '--json', 'path-info', '-r', `/nix/store/${lower.paths.top.baseName}`);
    expect(info.status, info.stderr).toBe(0);
    expect(JSON.parse(info.stdout).map((i: { layer: string }) => i.layer)).toEqual(['lower0', 'lower0', 'lower0']);
    const layers = JSON.parse(run('--store', `layered://${dir}`, '--json', 'layers').stdout);
    expect(layers[0].mount).toBe('user-namespace');
    // The mount lived only inside each command's namespace: nothing is left mounted here.
    expect(existsSync(join(dir, 'nix/store', added.slice('/nix/store/'.length)))).toBe(false);
  });
});
