#!/bin/sh
# Vendors axe-core (npm) for the accessibility checks in tests/; it is never served to users.
# Re-run to update: scripts/vendor-axe.sh [version]
set -eu
version="${1:-4.14.1}"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "axe-core@$version" >/dev/null && tar xzf "axe-core-$version.tgz")
mkdir -p "$here/tests/vendor/axe-core"
cp "$work/package/axe.min.js" "$work/package/LICENSE" "$here/tests/vendor/axe-core/"
echo "$version" > "$here/tests/vendor/axe-core/VERSION"
echo "axe-core $version -> tests/vendor/axe-core/"
