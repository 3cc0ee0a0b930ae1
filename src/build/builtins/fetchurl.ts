/**
 * `builtin:fetchurl` (Nix 2.8's builtins/fetchurl.cc): downloads `url` to the output, as a file,
 * or, with `unpack = "1"`, as a NAR (xz-compressed when the URL ends in `.xz`) restored at the
 * output; `executable = "1"` makes the result mode 0755. The fixed-output hash is checked
 * afterwards by the ordinary output checks. `hashed-mirrors` is empty by default in Nix 2.8 and
 * strata has no setting for it, so the URL is the only source.
 */
import { createWriteStream } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

import { decompressor } from '../../compression/index.js';
import { restoreNar } from '../../fs/nar-restore.js';
import { downloadStreamError, openDownload } from './download.js';
import { type BuiltinContext, requireAttr } from './context.js';

/**
 * Fetches into `ctx.target` (which must not exist).
 *
 * @example await builtinFetchurl({ env, target: '/tmp/staged/xyz-f.txt', log: (l) => {} });
 */
export async function builtinFetchurl(ctx: BuiltinContext): Promise<void> {
  const { env } = ctx;
  requireAttr(env, 'out');
  const url = requireAttr(env, 'url');
  const unpack = env.get('unpack') === '1';
  // As Nix: read even though only the hashed mirrors (none here) use it.
  requireAttr(env, 'outputHashMode');

  ctx.log(`downloading '${url}'`);
  const body = await openDownload(url, ctx.log, ctx.signal);
  try {
    if (unpack) {
      const nar = body.pipe(decompressor(url.endsWith('.xz') ? 'xz' : 'none'));
      body.on('error', (e) => nar.destroy(e));
      await restoreNar(nar, ctx.target);
    } else {
      await pipeline(body, createWriteStream(ctx.target, { flags: 'wx', mode: 0o644 }));
    }
  } catch (e) {
    throw downloadStreamError(url, e);
  }
  if (env.get('executable') === '1') await chmod(ctx.target, 0o755);
}
