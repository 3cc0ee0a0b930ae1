/**
 * S3Transport behaviour that needs no server: its staging directory.
 */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { S3Transport } from '../../src/store/binary-cache/s3-transport.js';
import { startWaitingChild } from '../support/child.js';
import { ensureBuilt, ROOT } from '../support/cli.js';

const transport = () => new S3Transport({ bucket: 'b', endpoint: '127.0.0.1:1', scheme: 'http', credentials: { accessKeyId: 'a', secretAccessKey: 's' } });

describe('S3Transport staging', () => {
  it('gives uploads that start at once one staging directory, and close() removes it', async () => {
    const t = transport();
    const dirs = await Promise.all(Array.from({ length: 8 }, () => t.stagingDir()));
    expect(new Set(dirs).size).toBe(1);
    expect(existsSync(dirs[0]!)).toBe(true);
    await t.close();
    expect(existsSync(dirs[0]!)).toBe(false);
  });

  it("removes the staging directory a killed process left behind (a spooled NAR in it), never a live process's", async () => {
    ensureBuilt();
    // A process that spools a file into its staging directory, prints the directory and waits.
    const owner = async () => {
      const code = `
        const { S3Transport } = await import(${JSON.stringify(join(ROOT, 'dist', 'store', 'binary-cache', 's3-transport.js'))});
        const { writeFileSync } = await import('node:fs');
        const t = new S3Transport({ bucket: 'b', endpoint: '127.0.0.1:1', scheme: 'http', credentials: { accessKeyId: 'a', secretAccessKey: 's' } });
        const dir = await t.stagingDir();
        writeFileSync(dir + '/.strata-upload-spooled', Buffer.alloc(1 << 20));
        process.stdout.write(dir + '\\n');
        setInterval(() => {}, 1000);`;
      const child = await startWaitingChild(code);
      return { dir: child.line, kill: child.kill };
    };
    const dead = await owner();
    const live = await owner();
    try {
      await dead.kill();
      expect(existsSync(join(dead.dir, '.strata-upload-spooled'))).toBe(true);
      const t = transport();
      try {
        const mine = await t.stagingDir();
        expect(mine).not.toBe(dead.dir);
        expect(existsSync(dead.dir)).toBe(false);
        expect(existsSync(join(live.dir, '.strata-upload-spooled'))).toBe(true);
      } finally {
        await t.close();
      }
    } finally {
      await live.kill();
      rmSync(live.dir, { recursive: true, force: true });
    }
  });
});
