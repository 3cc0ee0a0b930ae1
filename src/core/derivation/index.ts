/** Store derivations: the model, the ATerm and JSON forms, hashDerivationModulo and paths. */
export { compareUtf8, DerivationParseError, parseDerivation, printDerivation, type PrintDerivationOptions } from './aterm.js';
export { fixedOutputPath } from './fixed-output.js';
export { type DerivationHashes, hashDerivationModulo, type HashDerivationModuloOptions, type ReadDerivation } from './hash-modulo.js';
export { derivationFromJson, derivationToJson, type DerivationJson, type DerivationJsonFormat, type DerivationOutputJson, showDerivations, showDerivationsText } from './json.js';
export { computeOutputPaths, derivationPath, maskOutputs } from './output-paths.js';
export {
  cloneDerivation,
  type Derivation,
  type DerivationOutput,
  drvNameFromPath,
  drvReferences,
  inputDrvPaths,
  isFixedOutput,
  isHexDigest,
  type OutputHashAlgo,
  type OutputHashMethod,
  parseOutputHashAlgo,
  printOutputHashAlgo,
} from './types.js';
