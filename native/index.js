'use strict';
// The addon itself; strata's bundler rewrites this require to the package path (scripts/bundle.mjs).
const addon = require('./build/Release/strata_native.node');
// Named one by one, so that ESM importers see the names (Node's CommonJS export lexer).
exports.syncfs = addon.syncfs;
exports.treeWriter = addon.treeWriter;
exports.treeWriterPush = addon.treeWriterPush;
exports.treeWriterDone = addon.treeWriterDone;
exports.treeWriterFailed = addon.treeWriterFailed;
exports.treeWriterIdle = addon.treeWriterIdle;
exports.treeWriterClose = addon.treeWriterClose;
exports.treeWriterTakeLocks = addon.treeWriterTakeLocks;
