#!/usr/bin/env node
// Maintainer tool, not run by CI: turns Lodestar's own yarn.lock at the release tag (the
// dependency versions Lodestar was released and tested with) into resolution hints for npm, so
// that `npm install` in this folder produces a package-lock.json of that era rather than of
// today's semver ranges (today's ranges mix @multiformats/multiaddr 11 and 12 and libp2p
// cannot listen: "no valid addresses were provided for transports [@libp2p/tcp]").
//
//   git -C lodestar show v1.5.1:yarn.lock > /tmp/yarn.lock
//   node pin-from-yarn-lock.cjs /tmp/yarn.lock > yarn.lock   # in a scratch copy of this folder
//   npm install --ignore-scripts && cp package-lock.json back here
//
// npm (arborist) reads a yarn.lock beside package.json as resolution guidance: a dependency
// spec `name@range` found in it resolves to the locked version. The registry this project uses
// lacks some of those exact versions; for them the entry is rewritten to the nearest version
// it has that satisfies every range of the entry (the smallest above the locked one, else the
// largest below), and each rewrite is reported on stderr. Only the entries reachable from
// Lodestar's packages are kept.
const path = require("node:path");
const npmRoot = path.join(path.dirname(require.resolve("npm/package.json", { paths: ["/usr/lib/node_modules", "/usr/local/lib/node_modules"] })), "node_modules");
const YarnLock = require(path.join(npmRoot, "@npmcli/arborist/lib/yarn-lock.js"));
const pacote = require(path.join(npmRoot, "pacote"));
const semver = require(path.join(npmRoot, "semver"));
const fs = require("node:fs");

const VERSION = "1.5.1";
const LODESTAR = ["@chainsafe/lodestar", "@lodestar/api", "@lodestar/beacon-node", "@lodestar/config", "@lodestar/db",
  "@lodestar/fork-choice", "@lodestar/light-client", "@lodestar/params", "@lodestar/reqresp",
  "@lodestar/state-transition", "@lodestar/types", "@lodestar/utils", "@lodestar/validator"];

async function main() {
  const lock = new YarnLock();
  lock.parse(fs.readFileSync(process.argv[2], "utf8"));
  const opts = { preferOnline: false, preferOffline: true, fullMetadata: false };
  const queue = [];
  for (const name of LODESTAR) {
    const m = await pacote.manifest(`${name}@${VERSION}`, opts);
    for (const deps of [m.dependencies, m.optionalDependencies, m.peerDependencies]) {
      for (const [n, r] of Object.entries(deps || {})) queue.push(`${n}@${r}`);
    }
  }
  const keep = new Map(); // spec -> entry
  const unlocked = new Set();
  while (queue.length) {
    const spec = queue.pop();
    if (keep.has(spec) || unlocked.has(spec)) continue;
    if (spec.startsWith("@lodestar/")) continue;
    const entry = lock.entries.get(spec);
    if (!entry) { unlocked.add(spec); continue; }
    keep.set(spec, entry);
    for (const deps of [entry.dependencies, entry.optionalDependencies]) {
      for (const [n, r] of Object.entries(deps || {})) queue.push(`${n}@${r}`);
    }
  }
  // Group the kept specs by entry (one entry may serve several ranges).
  const byEntry = new Map();
  for (const [spec, entry] of keep) {
    if (!byEntry.has(entry)) byEntry.set(entry, []);
    byEntry.get(entry).push(spec);
  }
  let rewritten = 0;
  for (const [entry, specs] of byEntry) {
    const name = specs[0].slice(0, specs[0].lastIndexOf("@"));
    const ranges = specs.map((s) => s.slice(s.lastIndexOf("@") + 1));
    const pack = await pacote.packument(name, opts);
    if (pack.versions[entry.version]) continue;
    const ok = Object.keys(pack.versions).filter((v) => ranges.every((r) => semver.satisfies(v, r)));
    const above = ok.filter((v) => semver.gt(v, entry.version)).sort(semver.compare);
    const below = ok.filter((v) => semver.lt(v, entry.version)).sort(semver.rcompare);
    const pick = above[0] || below[0];
    if (!pick) {
      process.stderr.write(`no version of ${name} satisfies ${ranges.join(", ")}: left to npm\n`);
      for (const s of specs) keep.delete(s);
      continue;
    }
    const dist = pack.versions[pick].dist;
    process.stderr.write(`${name}: ${entry.version} is not on the registry; using ${pick} (${ranges.join(", ")})\n`);
    entry.version = pick;
    entry.resolved = dist.tarball;
    entry.integrity = dist.integrity;
    entry.dependencies = pack.versions[pick].dependencies;
    entry.optionalDependencies = pack.versions[pick].optionalDependencies;
    rewritten++;
  }
  for (const spec of [...lock.entries.keys()]) if (!keep.has(spec)) lock.entries.delete(spec);
  process.stderr.write(`${keep.size} specs kept, ${rewritten} entries rewritten, ${unlocked.size} specs not in yarn.lock: ${[...unlocked].sort().join(" ")}\n`);
  process.stdout.write(lock.toString());
}
main().catch((e) => { console.error(e); process.exit(1); });
