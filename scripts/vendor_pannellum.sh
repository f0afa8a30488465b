#!/usr/bin/env bash
# Vendor Pannellum (the web UI's 360° viewer) from npm into the package, which must work offline.
# Usage: scripts/vendor_pannellum.sh [VERSION]   (default 2.5.7). npm pack checks the tarball against the registry's
# integrity hash; the files are copied unchanged, with the licence.
set -euo pipefail
version="${1:-2.5.7}"
target="$(cd "$(dirname "$0")/.." && pwd)/src/multidiffusion/interfaces/ui/static/pannellum"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "pannellum@${version}" >/dev/null && tar xzf "pannellum-${version}.tgz")
cp "$work/package/build/pannellum.js" "$work/package/build/pannellum.css" "$work/package/COPYING" "$work/package/VERSION" "$target/"
echo "pannellum ${version} → ${target}; tarball sha256: $(sha256sum "$work/pannellum-${version}.tgz" | cut -d' ' -f1)"
echo "update the version and hash in ${target}/README.md"
