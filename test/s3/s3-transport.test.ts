/**
 * S3Transport behaviour that needs no server: its staging directory.
 */
import { existsSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { S3Transport } from '../../src/store/binary-cache/s3-transport.js';

describe('S3Transport staging', () => {
  it('gives uploads that start at once one staging directory, and close() removes it', async () => {
    const t = new S3Transport({ bucket: 'b', endpoint: '127.0.0.1:1', scheme: 'http', credentials: { accessKeyId: 'a', secretAccessKey: 's' } });
    const dirs = await Promise.all(Array.from({ length: 8 }, () => t.stagingDir()));
    expect(new Set(dirs).size).toBe(1);
    expect(existsSync(dirs[0]!)).toBe(true);
    await t.close();
    expect(existsSync(dirs[0]!)).toBe(false);
  });
});
