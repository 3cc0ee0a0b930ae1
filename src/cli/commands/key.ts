/**
 * `strata key generate NAME SECRET PUBLIC`: a binary-cache signing key pair, in the files
 * `nix-store --generate-binary-cache-key NAME SECRET PUBLIC` writes (one line, no trailing
 * newline; the secret one mode 0600). Unlike Nix it never overwrites an existing file: a lost
 * secret key cannot be recovered and every signature made with it would stop verifying.
 */
import type { Command } from 'commander';

import { globalOptions } from '../global.js';

/**
 * Writes both files or neither: each is created exclusively (`wx`), the secret one with mode
 * 0600 from the start so it is never readable by others, and whatever was made is removed again
 * when a later step fails.
 */
async function writeKeyFiles(
  secretFile: string,
  secret: string,
  publicFile: string,
  pub: string,
): Promise<void> {
  const { open, unlink } = await import('node:fs/promises');
  const { StrataError } = await import('../../core/error.js');
  const create = async (path: string, mode: number) => {
    try {
      return await open(path, 'wx', mode);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') {
        throw new StrataError('KEY_EXISTS', `Cannot write key file '${path}': it already exists`, {
          value: path,
          hint: 'remove it first, or choose another file name',
        });
      }
      throw new StrataError(
        'KEY_WRITE_FAILED',
        `Cannot write key file '${path}': ${code ?? String(e)}`,
        { value: path, cause: e },
      );
    }
  };
  const created: string[] = [];
  try {
    for (const [path, mode, text] of [
      [secretFile, 0o600, secret],
      [publicFile, 0o666, pub],
    ] as const) {
      const handle = await create(path, mode);
      created.push(path);
      try {
        // Nix writes the secret under umask 077, i.e. exactly 0600; the public file follows the umask.
        if (path === secretFile) await handle.chmod(0o600);
        await handle.writeFile(text);
      } finally {
        await handle.close();
      }
    }
  } catch (e) {
    for (const path of created) await unlink(path).catch(() => undefined);
    throw e;
  }
}

export function register(program: Command): void {
  const key = program.command('key').description('manage binary-cache signing keys');
  key
    .command('generate')
    .description('make a new ed25519 key pair (nix-store --generate-binary-cache-key)')
    .argument('<name>', "the key name, e.g. 'cache.example.org-1'")
    .argument('<secret-file>', 'where to write the secret key (mode 0600)')
    .argument('<public-file>', 'where to write the public key')
    .action(
      async (
        name: string,
        secretFile: string,
        publicFile: string,
        _opts: unknown,
        cmd: Command,
      ) => {
        const { generateKeyPair, formatPublicKey, formatSecretKey } =
          await import('../../core/signature.js');
        const { secretKey, publicKey } = generateKeyPair(name);
        await writeKeyFiles(
          secretFile,
          formatSecretKey(secretKey),
          publicFile,
          formatPublicKey(publicKey),
        );
        // The public key is safe to show; the secret one is never printed.
        if (globalOptions(cmd).json) {
          const { printJson } = await import('../output.js');
          printJson({
            name,
            publicKey: formatPublicKey(publicKey),
            secretKeyFile: secretFile,
            publicKeyFile: publicFile,
          });
        }
      },
    );
}
