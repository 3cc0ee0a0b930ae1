/** The contents of a NAR whose root is one regular file (a `.drv`), bounded in size. */
import type { Readable } from 'node:stream';

import { StrataError } from '../core/error.js';
import { parseNar } from '../core/nar/parser.js';

// A .drv of 64 MiB would already be absurd; refuse more rather than hold it in memory.
const LIMIT = 64 * 1024 * 1024;

export async function narRegularFileContents(nar: Readable, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  let depth = 0;
  let isFile = false;
  await parseNar(nar, (ev) => {
    if (ev.type === 'directory') depth++;
    if (ev.type === 'symlink' || (ev.type === 'directory' && depth === 1)) {
      throw new StrataError('NOT_A_FILE', `Cannot read '${what}': it is not a regular file`, { value: what });
    }
    if (ev.type === 'regular') {
      isFile = true;
      if (ev.size > LIMIT) throw new StrataError('FILE_TOO_LARGE', `Cannot read '${what}': it is larger than ${LIMIT} bytes`, { value: what });
    }
    if (ev.type === 'contents') {
      size += ev.chunk.length;
      chunks.push(Buffer.from(ev.chunk));
    }
  });
  if (!isFile) throw new StrataError('NOT_A_FILE', `Cannot read '${what}': it is not a regular file`, { value: what });
  return Buffer.concat(chunks, size);
}
