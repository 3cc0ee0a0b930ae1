/**
 * Structured attributes as Nix 2.8 hands them to the builder: `.attrs.json` and `.attrs.sh`, byte
 * for byte, and the environment without the derivation's env. The fixture was made by real Nix
 * 2.8 (`derivation { __structuredAttrs = true; ... }` built with `nix-store -r`, sandbox off; the
 * builder copied both files into its output).
 */
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { builderEnvironment, realise, realiseOrThrow } from '../../src/build/index.js';
import { type JsonValue, parseJson } from '../../src/build/structured-attrs.js';
import { isStrataError } from '../../src/core/error.js';
import type { Derivation } from '../../src/core/derivation/index.js';
import { tempDir } from '../support/tmp.js';
import { addDerivation } from '../../src/store/derivation-add.js';
import type { LocalFsStore } from '../../src/store/store.js';
import { addShDrv, openChroot, shDrv } from './helpers.js';

/** Like addShDrv, with bash (`.attrs.sh` declares arrays). */
function addBashDrv(store: LocalFsStore, ...args: Parameters<typeof shDrv>): ReturnType<typeof addDerivation> {
  const drv = shDrv(...args);
  drv.builder = '/bin/bash';
  drv.env.set('builder', '/bin/bash');
  return addDerivation(store, drv);
}

const isRoot = process.getuid?.() === 0;

/** The derivation's `__json`, as `nix-instantiate` wrote it. */
const NIX_JSON = "{\"Z\":\"upper\",\"bad-key\":1,\"big\":9007199254740993,\"bigger\":4294967297,\"builder\":\"/bin/bash\",\"exportReferencesGraph\":{\"g2\":\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"graph\":[\"/nix/store/caki0c17k2d2dfwzwnrch960id7giiyk-dep2\"]},\"f\":1.5,\"f2\":2,\"f3\":0.0001,\"f4\":1e+20,\"f5\":1.23457e+08,\"fa\":false,\"l\":[1,\"x\",null,true,false,1.5],\"l2\":[1,\"x\",null],\"name\":\"sa2\",\"neg\":-3,\"nested\":{\"a\":{\"b\":1}},\"nul\":null,\"o\":{\"k y\":\"v'\",\"n\":2},\"outputChecks\":{\"dev\":{\"disallowedRequisites\":[\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\"]},\"out\":{\"allowedReferences\":[\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"/nix/store/caki0c17k2d2dfwzwnrch960id7giiyk-dep2\",\"dev\",\"out\"],\"maxSize\":100000}},\"outputs\":[\"out\",\"dev\"],\"s\":\"it's \\\"q\\\"\\n\\ttab \u00fc \ud83d\ude00 u0001\",\"system\":\"x86_64-linux\",\"t\":true}";
/** What Nix 2.8 wrote into the build dir for it. */
const NIX_ATTRS_JSON = "{\"Z\":\"upper\",\"bad-key\":1,\"big\":9007199254740993,\"bigger\":4294967297,\"builder\":\"/bin/bash\",\"exportReferencesGraph\":{\"g2\":\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"graph\":[\"/nix/store/caki0c17k2d2dfwzwnrch960id7giiyk-dep2\"]},\"f\":1.5,\"f2\":2,\"f3\":0.0001,\"f4\":1e+20,\"f5\":123457000.0,\"fa\":false,\"g2\":[{\"closureSize\":120,\"narHash\":\"sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\",\"narSize\":120,\"path\":\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"references\":[]}],\"graph\":[{\"closureSize\":120,\"narHash\":\"sha256:00kjynz8n03652qccs76ivsvark3pr3dfr6w1ba3x7bx83kcknvv\",\"narSize\":120,\"path\":\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"references\":[]},{\"closureSize\":280,\"narHash\":\"sha256:1hlb8fjpllmwasypmr5salb50i57xc6ks2623immld2p95gmsqnp\",\"narSize\":160,\"path\":\"/nix/store/caki0c17k2d2dfwzwnrch960id7giiyk-dep2\",\"references\":[\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\"]}],\"l\":[1,\"x\",null,true,false,1.5],\"l2\":[1,\"x\",null],\"name\":\"sa2\",\"neg\":-3,\"nested\":{\"a\":{\"b\":1}},\"nul\":null,\"o\":{\"k y\":\"v'\",\"n\":2},\"outputChecks\":{\"dev\":{\"disallowedRequisites\":[\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\"]},\"out\":{\"allowedReferences\":[\"/nix/store/1q1snk0wb3v080b9vbsfkm6qa2lwi7is-dep\",\"/nix/store/caki0c17k2d2dfwzwnrch960id7giiyk-dep2\",\"dev\",\"out\"],\"maxSize\":100000}},\"outputs\":{\"dev\":\"/nix/store/m6x8mah2h9sdyhm0cd8vwjyjb27348pr-sa2-dev\",\"out\":\"/nix/store/ip0jbns7wnip578c31fg7y4jvlfr4v0h-sa2\"},\"s\":\"it's \\\"q\\\"\\n\\ttab \u00fc \ud83d\ude00 u0001\",\"system\":\"x86_64-linux\",\"t\":true}";
const NIX_ATTRS_SH = "declare Z='upper'\ndeclare big=1\ndeclare bigger=1\ndeclare builder='/bin/bash'\ndeclare f2=2\ndeclare f4=-2147483648\ndeclare f5=123457000\ndeclare fa=\ndeclare -a l2=(1 'x' '' )\ndeclare name='sa2'\ndeclare neg=-3\ndeclare nul=''\ndeclare -A o=(['k y']='v'\\''' ['n']=2 )\ndeclare -A outputs=(['dev']='/nix/store/m6x8mah2h9sdyhm0cd8vwjyjb27348pr-sa2-dev' ['out']='/nix/store/ip0jbns7wnip578c31fg7y4jvlfr4v0h-sa2' )\ndeclare s='it'\\''s \"q\"\n\ttab \u00fc \ud83d\ude00 u0001'\ndeclare system='x86_64-linux'\ndeclare t=1\n";

describe('structured attributes: the build dir files', () => {
  it('writes .attrs.json and .attrs.sh exactly as Nix 2.8 does', () => {
    const expected = parseJson(NIX_ATTRS_JSON, 'fixture') as { [key: string]: JsonValue };
    const outputs = expected['outputs'] as { [key: string]: string };
    const drv: Derivation = {
      name: 'sa2',
      system: 'x86_64-linux',
      builder: '/bin/bash',
      args: [],
      outputs: new Map([
        ['dev', {}],
        ['out', {}],
      ]),
      inputDrvs: new Map(),
      inputSrcs: [],
      env: new Map([
        ['__json', NIX_JSON],
        ['dev', outputs['dev']!],
        ['out', outputs['out']!],
      ]),
    };
    const { env, files } = builderEnvironment(drv, {
      storeDir: '/nix/store',
      buildDir: '/tmp/nix-build-sa2.drv-0',
      cores: 2,
      outputPaths: new Map(Object.entries(outputs)),
      exportedGraphs: { g2: expected['g2']!, graph: expected['graph']! },
    });
    const byName = Object.fromEntries(files.map((f) => [f.name, f.contents]));
    expect(byName['.attrs.json']).toBe(NIX_ATTRS_JSON);
    expect(byName['.attrs.sh']).toBe(NIX_ATTRS_SH);
    expect(Object.fromEntries(env)).toEqual({
      HOME: '/homeless-shelter',
      NIX_ATTRS_JSON_FILE: '/tmp/nix-build-sa2.drv-0/.attrs.json',
      NIX_ATTRS_SH_FILE: '/tmp/nix-build-sa2.drv-0/.attrs.sh',
      NIX_BUILD_CORES: '2',
      NIX_BUILD_TOP: '/tmp/nix-build-sa2.drv-0',
      NIX_LOG_FD: '2',
      NIX_STORE: '/nix/store',
      PATH: '/path-not-set',
      PWD: '/tmp/nix-build-sa2.drv-0',
      TEMP: '/tmp/nix-build-sa2.drv-0',
      TEMPDIR: '/tmp/nix-build-sa2.drv-0',
      TERM: 'xterm-256color',
      TMP: '/tmp/nix-build-sa2.drv-0',
      TMPDIR: '/tmp/nix-build-sa2.drv-0',
    });
  });

  it('refuses a malformed __json', () => {
    expect(() => parseJson('{"a":1,}', 'x')).toThrow(/Cannot parse the __json attribute of 'x'/);
  });
});

describe.skipIf(!isRoot)('structured attributes: builds', () => {
  it('builds with .attrs.json/.attrs.sh, exportReferencesGraph as path infos, and outputChecks', async () => {
    const root = tempDir();
    const store = await openChroot(root);
    try {
      const depDrv = await addShDrv(store, 'dep', 'echo dep > $out');
      const [d] = await realiseOrThrow(store, [depDrv]);
      const dep = store.storeDir.print(d!.get('out')!);
      const inputDrvs = new Map([[depDrv.baseName, ['out']]]);
      const attrs = (extra: object): string =>
        JSON.stringify({ name: 'sa', system: 'x86_64-linux', builder: '/bin/bash', ...extra });
      const script =
        '. "$NIX_ATTRS_SH_FILE"; /bin/mkdir ${outputs[out]}; /bin/cp "$NIX_ATTRS_JSON_FILE" ${outputs[out]}/json; echo "out-env=${out:-unset} dep=$dep" > ${outputs[out]}/seen';
      const ok = await addBashDrv(store, 'sa', script, {
        inputDrvs,
        env: { __json: attrs({ dep, exportReferencesGraph: { closure: [dep] } }) },
      });
      const [o] = await realiseOrThrow(store, [ok]);
      const out = store.realPath(o!.get('out')!);
      // The derivation's env (`out`) is not in the environment; attributes come from .attrs.sh.
      expect(readFileSync(`${out}/seen`, 'utf8')).toBe(`out-env=unset dep=${dep}\n`);
      const json = JSON.parse(readFileSync(`${out}/json`, 'utf8')) as Record<string, unknown>;
      const info = await store.queryPathInfo(d!.get('out')!);
      expect(json['closure']).toEqual([
        {
          closureSize: info!.narSize,
          narHash: `sha256:${info!.narHash.toNix32()}`,
          narSize: info!.narSize,
          path: dep,
          references: [],
        },
      ]);
      expect(json['outputs']).toEqual({ out: store.storeDir.print(o!.get('out')!) });

      const bad = await addBashDrv(store, 'sa', `. "$NIX_ATTRS_SH_FILE"; echo $dep > \${outputs[out]}`, {
        inputDrvs,
        env: { __json: attrs({ dep, outputChecks: { out: { allowedReferences: [] } } }) },
      });
      const [r] = await realise(store, [bad]);
      expect(isStrataError(r!.error, 'REFERENCE_NOT_ALLOWED'), String(r!.error)).toBe(true);
      const big = await addBashDrv(store, 'sa', '. "$NIX_ATTRS_SH_FILE"; echo 0123456789 > ${outputs[out]}', {
        env: { __json: attrs({ outputChecks: { out: { maxSize: 100 } } }) },
      });
      const [r2] = await realise(store, [big]);
      // Real Nix 2.8: "path '…-sa' is too large at 128 bytes; limit is 100 bytes".
      expect(isStrataError(r2!.error, 'OUTPUT_TOO_LARGE'), String(r2!.error)).toBe(true);
      expect(r2!.error!.message).toContain('it is 128 bytes, more than its maxSize of 100');
    } finally {
      await store.close();
    }
  });
});
