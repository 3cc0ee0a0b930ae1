/** Builds: realising derivations through any local file system store (local or layered). */
export {
  type BuilderExit,
  type BuilderInvocation,
  canIsolate,
  type Isolation,
  runBuilder,
} from './builder.js';
export {
  BuildFailure,
  buildDerivation,
  type BuildOptions,
  type BuildRequest,
  LOG_TAIL_LINES,
} from './build-derivation.js';
export { canonicaliseOutput } from './canonicalise.js';
export {
  type BuildDirFile,
  builderEnvironment,
  type BuilderEnvironment,
  type EnvironmentOptions,
} from './environment.js';
export { BuildLog, buildLogPath, findBzip2 } from './logs.js';
export { BuildNamespace, overlaySetupArgs, type SpawnedExit } from './namespace.js';
export {
  realise,
  type RealiseEvent,
  type RealiseOptions,
  type RealiseResult,
  realiseOrThrow,
} from './realise.js';
export { type BuiltOutputs, checkOutputs, publishOutputs } from './register-outputs.js';
