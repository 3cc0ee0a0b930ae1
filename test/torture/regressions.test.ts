/**
 * Regression cases for the defects the torture suite found, one per defect, kept small and
 * deterministic (the fuzzers that found them use random inputs).
 */
import { describe, expect, it } from 'vitest';

import { parseDerivation } from '../../src/core/derivation/aterm.js';
import { StrataError } from '../../src/core/error.js';
import { StoreDir } from '../../src/core/store-path.js';
import { parseStoreUri } from '../../src/store/uri.js';
import { ensureBuilt, runStrata } from '../support/cli.js';

function thrown(fn: () => unknown): StrataError {
  try {
    fn();
  } catch (e) {
    if (e instanceof StrataError) return e;
    throw e;
  }
  throw new Error('did not throw');
}

describe('torture regressions', () => {
  // Found by fuzz-text: a newline in a quoted value split the error over two lines.
  it('StrataError messages stay on one line when the quoted input holds newlines or control characters', () => {
    const e = thrown(() => parseStoreUri('\n\0local'));
    expect(e.code).toBe('URI_INVALID');
    expect(e.message).toBe("Cannot use store URI '\\n\\x00local': unknown form (expected /abs/dir, local, file://, http(s)://, s3://, local-overlay:// or layered://)");
    const d = thrown(() => parseDerivation(new StoreDir(), 'Derive([("out","","\n","")],[],[],"","",[],[])'));
    expect(d.code).toBe('DRV_INVALID');
    expect(d.message).not.toMatch(/[\n\r]/);
    expect(new StrataError('X', 'a\r\nb', { hint: 'c\nd' }).hint).toBe('c\\nd');
  });

  it('the CLI prints exactly one error line for a store URI with a newline in it', async () => {
    ensureBuilt();
    const r = await runStrata(['--store', 'file://\nrm -rf /', 'path-info', '--all']);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l !== '')).toHaveLength(1);
  });

  // Found by fuzz-text: '//' stripped to '' and opened a store relative to the working directory.
  it("parseStoreUri keeps '/' for roots made only of slashes", () => {
    expect(parseStoreUri('//')).toMatchObject({ scheme: 'local', root: '/' });
    expect(parseStoreUri('local-overlay:////')).toMatchObject({ root: '/' });
    expect(parseStoreUri('file:////')).toMatchObject({ scheme: 'file', path: '/' });
    expect(parseStoreUri('/tmp/x//')).toMatchObject({ root: '/tmp/x' });
  });
});
