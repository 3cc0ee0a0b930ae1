#!/usr/bin/env node
/**
 * The second half of `npm run build`: bundles the compiled CLI (dist/cli/main.js, from tsc) into
 * one CommonJS file, dist/strata.cjs, which bin/strata loads. Why (bench/startup.ts, BENCHMARKS.md
 * "Start-up"): Node 20 pays per module file (resolve, stat, read, and for ESM a thread-pool round
 * trip and a module record), and `strata path-info` read 43 JavaScript files. Bundled it reads
 * 3 (bin/strata, the bundle and fs-ext's wrapper), plus the bundle's V8 code cache, two addons
 * and four package.json files.
 *
 * Why CommonJS and not ESM: in a single ESM bundle esbuild hoists every `import` of an external
 * package to the top of the file, so the lazily loaded AWS SDK, undici, etc. would load at every
 * start (this is what made an earlier ESM bundle slower than no bundle); in CommonJS output they
 * stay `require()` calls inside the lazily initialised module that uses them. An ESM entry would
 * also run Node's CommonJS export lexer over the whole bundle, so bin/strata is CommonJS too.
 *
 * Left out (loaded from node_modules at run time, and only by the commands that use them):
 * packages with native addons, which must be `require`d from their own directory, and the two big
 * ones only network stores use: the AWS SDK (s3://, 2 MB) and undici (http(s)://, 1 MB, which
 * would otherwise be two thirds of the bundle). better-sqlite3 is bundled (its 16 small files
 * are on every store command's path) with its addon required directly: its `bindings` helper
 * finds the addon from the caller's file name, which a bundle would change, and probes a dozen
 * paths doing so.
 *
 * Usage: `node scripts/bundle.mjs [DIST_DIR]` (default dist/ of this checkout).
 */
import { renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = resolve(process.argv[2] ?? join(ROOT, 'dist'));
const entry = join(dist, 'cli', 'main.js');
statSync(entry); // a clear ENOENT when tsc has not run

/** better-sqlite3's `require('bindings')('better_sqlite3.node')`, resolved at build time. */
const betterSqliteAddon = {
  name: 'better-sqlite3-addon',
  setup(b) {
    b.onResolve({ filter: /^bindings$/ }, (args) =>
      args.importer.includes('/node_modules/better-sqlite3/')
        ? { path: 'bindings', namespace: 'addon' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'addon' }, () => ({
      contents:
        "module.exports = () => require('better-sqlite3/build/Release/better_sqlite3.node');",
      loader: 'js',
      resolveDir: ROOT,
    }));
  },
};

/**
 * Node built-ins that Node's own start-up does not load are made lazy: the bundle's `require`
 * returns a proxy for them that loads the real module on first use. Bundled code reads a
 * built-in's members where it uses them (`(0, import_node_crypto.createHash)(…)`), so a command
 * that never hashes never loads node:crypto. Measured on `strata path-info`
 * (process.moduleLoadList): 53 built-in modules loaded against 5 for `node -e 0`, from
 * commander's and rootless.ts's `child_process` (which pulls in net, dgram and stream) and
 * core/hash.ts's `crypto` (12 modules); compiling them was a fifth of the command's CPU profile.
 * (fs, path, events, util, url and buffer are loaded by Node's bootstrap anyway.)
 */
function lazyBuiltins(realRequire, lazy) {
  const proxies = new Map();
  return Object.assign((id) => {
    if (!lazy.includes(id)) return realRequire(id);
    if (!proxies.has(id)) {
      let real;
      const load = () => (real ??= realRequire(id));
      // A function target, so that a module whose export is itself a function stays callable
      // and constructible through the proxy: `stream` is the Stream constructor, and
      // unbzip2-stream's `through` does `new Stream()`.
      const target = function () {};
      const fixed = (key) => {
        const t = Reflect.getOwnPropertyDescriptor(target, key);
        return t && !t.configurable ? t : undefined;
      };
      const proxy = new Proxy(target, {
        get: (_, key) => load()[key],
        has: (_, key) => key in load(),
        // A proxy must report its target's non-configurable keys (a function's `prototype`).
        ownKeys: () => [...new Set([...Reflect.ownKeys(load()), ...Reflect.ownKeys(target).filter(fixed)])],
        getOwnPropertyDescriptor: (_, key) => {
          const d = Reflect.getOwnPropertyDescriptor(load(), key);
          const t = fixed(key);
          if (t) return d ? { ...d, configurable: false, writable: true } : t;
          return d && { ...d, configurable: true };
        },
        apply: (_, self, args) => Reflect.apply(load(), self, args),
        construct: (_, args, newTarget) => Reflect.construct(load(), args, newTarget === proxy ? load() : newTarget),
      });
      proxies.set(id, proxy);
    }
    return proxies.get(id);
  }, realRequire);
}
const LAZY = [
  'child_process',
  'crypto',
  'dgram',
  'dns',
  'http',
  'https',
  'net',
  'os',
  'readline',
  'stream',
  'stream/promises',
  'tls',
  'worker_threads',
  'zlib',
];

const outfile = join(dist, 'strata.cjs');
const result = await build({
  entryPoints: [entry],
  outfile,
  write: false,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['fs-ext', 'zstd-napi', 'node-liblzma', '@aws-sdk/*', 'undici', '*.node'],
  plugins: [betterSqliteAddon],
  banner: {
    js: `require = (${lazyBuiltins})(require, ${JSON.stringify(LAZY.flatMap((m) => [m, `node:${m}`]))});`,
  },
  // `import()` of what is left out (Node's built-ins, the packages above: all CommonJS) becomes
  // `require()`: a dynamic import would need a module loader callback, which V8 drops from a
  // script compiled from bin/strata's code cache (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING).
  supported: { 'dynamic-import': false },
  logLevel: 'warning',
});
// Replaced in one rename: a strata started during a build reads the old bundle or the new one.
writeFileSync(`${outfile}.tmp-${process.pid}`, result.outputFiles[0].contents, { mode: 0o755 });
renameSync(`${outfile}.tmp-${process.pid}`, outfile);
// bin/strata's V8 code caches belong to the previous bundle.
rmSync(join(dist, '.v8-cache'), { recursive: true, force: true });
