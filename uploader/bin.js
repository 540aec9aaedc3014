#!/usr/bin/env node
// The `uploader` executable (package.json "bin"): a launcher for cli.ts.
//
// It runs the TypeScript sources through Node's type stripping, which works from a clone
// (Node >= 22.18 or 23.6 strip types by default). Node refuses to strip types in files
// under node_modules, so an installed package needs compiled JavaScript instead; see the
// packaging notes in the README.
import { main } from "./cli.ts";

process.exitCode = await main(process.argv.slice(2));
