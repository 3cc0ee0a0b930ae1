#!/usr/bin/env node
/**
 * The second half of `npm run build`: bundles the compiled CLI (dist/cli/main.js, from tsc) into
 * CommonJS files that bin/strata loads: dist/strata.cjs holds every command; dist/bundle/<name>.cjs
 * holds one command module (bin/strata picks it from the command line; main.ts hands anything
 * else to the full bundle); dist/bundle/env-fresh.cjs answers `strata env` from a fresh cache.
 * Why (bench/startup.ts, BENCHMARKS.md "Start-up"): Node 20 pays per module file (resolve, stat,
 * read, and for ESM a thread-pool round trip and a module record), and `strata path-info` read
 * 43 JavaScript files; bundled it reads 2 (bin/strata and its bundle) plus the bundle's V8 code
 * cache and two addons. And on this kind of VM every page of a file read costs a page fault, so
 * a command's bundle leaves out the other commands (path-info: 335 KB instead of 523 KB).
 *
 * Why CommonJS and not ESM: in a single ESM bundle esbuild hoists every `import` of an external
 * package to the top of the file, so the lazily loaded AWS SDK, undici, etc. would load at every
 * start (this is what made an earlier ESM bundle slower than no bundle); in CommonJS output they
 * stay `require()` calls inside the lazily initialised module that uses them. An ESM entry would
 * also run Node's CommonJS export lexer over the whole bundle, so bin/strata is CommonJS too.
 *
 * Left out (loaded from node_modules at run time, and only by the commands that use them):
 * packages with native addons, which must be `require`d from their own directory, and the AWS
 * SDK (2 MB, only for s3://). better-sqlite3, fs-ext and native/ are bundled, being on every store
 * command's path (better-sqlite3 is 16 small files), with their addons required directly:
 * better-sqlite3's `bindings` helper finds the addon from the caller's file name, which a bundle
 * would change, and probes a dozen paths doing so.
 *
 * Usage: `node scripts/bundle.mjs [DIST_DIR]` (default dist/ of this checkout).
 */
import { mkdirSync, realpathSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

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
 * An addon a bundled package requires by a relative path (fs-ext's `./build/Release/fs_ext.node`,
 * native/index.js's `./build/Release/strata_native.node`), required from the package instead
 * of from the bundle's dir. esbuild names an importer by its real path, so the package's dir is
 * resolved the same way (node_modules/strata-native is a link to native/).
 */
const packageAddon = (pkg, addon) => {
  const dir = dirname(realpathSync(createRequire(join(ROOT, 'package.json')).resolve(`${pkg}/package.json`))) + '/';
  return {
    name: `${pkg}-addon`,
    setup(b) {
      b.onResolve({ filter: new RegExp(`^\\./build/Release/${addon.replace('.', '\\.')}$`) }, (args) =>
        args.importer.startsWith(dir) ? { path: `${pkg}/build/Release/${addon}`, external: true } : undefined,
      );
    },
  };
};
const fsExtAddon = packageAddon('fs-ext', 'fs_ext.node');
const nativeAddon = packageAddon('strata-native', 'strata_native.node');

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

/** Options every bundle shares. */
const common = {
  write: false,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // fs-ext is bundled too (its one file requires its addon by a relative path, kept as is):
  // resolving it from node_modules cost a dozen stat calls and a package.json read per start.
  external: ['zstd-napi', 'node-liblzma', '@aws-sdk/*', '*.node'],
  banner: {
    js: `require = (${lazyBuiltins})(require, ${JSON.stringify(LAZY.flatMap((m) => [m, `node:${m}`]))});`,
  },
  // `import()` of what is left out (Node's built-ins, the packages above: all CommonJS) becomes
  // `require()`: a dynamic import would need a module loader callback, which V8 drops from a
  // script compiled from bin/strata's code cache (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING).
  supported: { 'dynamic-import': false },
  // Whitespace and comments out, ASCII only: the bundle is read at every start, and on this kind
  // of VM each page read or copied costs a page fault (~20 µs, bench/startup.ts); 785 KB became 520 KB. An
  // all-ASCII file is also read as latin1 (bin/strata), which skips UTF-8 decoding (8 ms for
  // the 46 non-ASCII characters of the comments). Names are kept, for readable stack traces.
  minifyWhitespace: true,
  minifySyntax: true,
  charset: 'ascii',
  legalComments: 'none',
  logLevel: 'warning',
};

/**
 * The bundle's text: its hashbang dropped, checked to be ASCII, and wrapped here in the function
 * Node wraps a CommonJS module in, so that bin/strata compiles the file's text as it is read:
 * wrapping it at run time made a second string that V8 flattened into a third copy (~80 page
 * faults for a 335 KB bundle).
 */
function text(result, name) {
  let bytes = Buffer.from(result.outputFiles[0].contents);
  if (bytes.subarray(0, 2).toString() === '#!') bytes = bytes.subarray(bytes.indexOf(10) + 1);
  const bad = bytes.findIndex((b) => b > 0x7f);
  if (bad >= 0) throw new Error(`${name}: byte ${bad} is not ASCII; bin/strata reads bundles as latin1`);
  return Buffer.concat([Buffer.from(WRAPPER[0]), bytes, Buffer.from(WRAPPER[1])]);
}
/** Node's CommonJS wrapper (`require('node:module').wrapper`), plus bin/strata's launcher. */
const WRAPPER = ['(function (exports, require, module, __filename, __dirname, launcher) {', '\n})'];

/** Replaced in one rename: a strata started during a build reads the old bundle or the new one. */
function publish(file, bytes) {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp-${process.pid}`, bytes, { mode: 0o644 });
  renameSync(`${file}.tmp-${process.pid}`, file);
}

/**
 * A bundle of the CLI holding only the command module `file` (the commands `names`): the other
 * command modules are left out, and src/cli/bundled-commands.ts is replaced so that main.ts hands
 * any other command line to the full bundle.
 */
function onlyCommand(file, names) {
  return {
    name: 'only-command',
    setup(b) {
      b.onResolve({ filter: /^\.\/commands\/.*\.js$/ }, (args) =>
        args.importer.endsWith(join('cli', 'command-table.js')) && args.path !== `./commands/${file}`
          ? { path: args.path, namespace: 'left-out' }
          : undefined,
      );
      b.onLoad({ filter: /.*/, namespace: 'left-out' }, () => ({
        contents: "export function register() { throw new Error('not in this bundle'); }",
        loader: 'js',
      }));
      b.onResolve({ filter: /^\.\/bundled-commands\.js$/ }, () => ({ path: 'bundled-commands', namespace: 'only' }));
      b.onLoad({ filter: /.*/, namespace: 'only' }, () => ({
        // `launcher` is bin/strata's, a parameter of the wrapper (see WRAPPER).
        contents: `export const BUNDLED_COMMANDS = ${JSON.stringify(names)};
export function runFullCli() { launcher.runFullCli(); }`,
        loader: 'js',
      }));
    },
  };
}

// Which module declares each command, read from the compiled command table itself.
const { COMMAND_MODULES } = await import(pathToFileURL(join(dist, 'cli', 'command-table.js')).href);
const modules = new Map();
for (const [name, load] of Object.entries(COMMAND_MODULES)) {
  const file = /\.\/commands\/([a-z-]+\.js)/.exec(String(load))?.[1];
  if (!file) throw new Error(`command-table.js: cannot tell the module of '${name}'`);
  modules.set(file, [...(modules.get(file) ?? []), name]);
}

const plugins = [betterSqliteAddon, fsExtAddon, nativeAddon];
const builds = [
  { out: join(dist, 'strata.cjs'), entry, plugins },
  // `strata env` answered from a fresh cache, before any of the CLI loads (src/cli/env-fresh.ts).
  { out: join(dist, 'bundle', 'env-fresh.cjs'), entry: join(dist, 'cli', 'env-fresh.js'), plugins },
  ...[...modules].flatMap(([file, names]) => {
    const only = { entry, plugins: [...plugins, onlyCommand(file, names)] };
    return names.map((name) => ({ ...only, out: join(dist, 'bundle', `${name}.cjs`) }));
  }),
];
const outputs = await Promise.all(
  builds.map(async (o) => text(await build({ ...common, entryPoints: [o.entry], outfile: o.out, plugins: o.plugins }), o.out)),
);
rmSync(join(dist, 'bundle'), { recursive: true, force: true });
builds.forEach((o, i) => publish(o.out, outputs[i]));
// bin/strata's V8 code caches belong to the previous bundles.
rmSync(join(dist, '.v8-cache'), { recursive: true, force: true });
