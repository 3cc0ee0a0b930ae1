/** A Node child process that reports one line and then waits to be killed (an owner of some resource). */
import { spawn } from 'node:child_process';

export interface WaitingChild {
  /** The first line the child printed. */
  line: string;
  /** SIGKILL, resolved once it is gone. */
  kill(): Promise<void>;
}

/**
 * Runs `code` (an ES module's text) in a new Node process with `args` and resolves with the first
 * line it prints; the child must then keep running (e.g. `setInterval(() => {}, 1000)`).
 */
export function startWaitingChild(code: string, args: string[] = [], env: NodeJS.ProcessEnv = process.env): Promise<WaitingChild> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
    child.once('error', reject);
    child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
    child.stdout.once('data', (c: Buffer) =>
      resolve({
        line: c.toString().trim(),
        kill: () =>
          new Promise<void>((r) => {
            child.removeAllListeners('exit');
            child.once('exit', () => r());
            child.kill('SIGKILL');
          }),
      }),
    );
  });
}
