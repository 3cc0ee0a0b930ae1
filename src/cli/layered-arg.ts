/** The layered store a layered command works on: `DIR` argument, else `--store layered:///dir`. */
import { resolve } from 'node:path';

import type { Command } from 'commander';

import { StrataError } from '../core/error.js';
import { storeUri } from './global.js';

export function layeredDir(cmd: Command, dirArg: string | undefined): string {
  if (dirArg) return resolve(dirArg);
  const uri = storeUri(cmd);
  const m = /^layered:\/\/(\/[^?]*)/.exec(uri);
  if (!m) throw new StrataError('URI_INVALID', `Cannot find a layered store in '${uri}': give DIR or --store layered:///dir`, { value: uri });
  return m[1]!.replace(/\/+$/, '');
}
