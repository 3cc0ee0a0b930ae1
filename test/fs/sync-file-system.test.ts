/** syncfs(2) through native/: a real call on a real file system, and its errors as Node's fs gives them. */
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { syncfs } from 'strata-native';
import { describe, expect, it } from 'vitest';

import { syncFileSystem } from '../../src/fs/sync-file-system.js';
import { tempDir } from '../support/tmp.js';

describe('syncFileSystem', () => {
  it('syncs the file system of a directory', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'f'), 'dirty');
    await expect(syncFileSystem(dir)).resolves.toBeUndefined();
  });

  it('refuses what is not a directory (ENOTDIR), syncing nothing', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'f'), '');
    await expect(syncFileSystem(join(dir, 'f'))).rejects.toMatchObject({ code: 'ENOTDIR' });
  });
});

describe('the addon', () => {
  it('rejects a closed descriptor with an errno error, as node:fs does', async () => {
    const fd = openSync(tempDir(), 'r');
    closeSync(fd);
    await expect(syncfs(fd)).rejects.toMatchObject({ code: 'EBADF', errno: -9, syscall: 'syncfs', message: 'EBADF: bad file descriptor, syncfs' });
  });

  it('throws on an argument that is no descriptor', () => {
    expect(() => syncfs(-1)).toThrow(TypeError);
    expect(() => syncfs('3' as unknown as number)).toThrow(TypeError);
  });
});
