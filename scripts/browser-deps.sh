#!/usr/bin/env bash
# What the store page's browser test (tests/api/page.rs → tests/browser/page.mjs) needs:
# Debian's chromium (no browser download), Node.js with npm, a font with Traditional Chinese
# glyphs for the zh-TW screenshots, and the pinned npm packages (playwright-core, axe-core) from
# tests/browser/package-lock.json. Installs only what is missing; run by scripts/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
say() { printf '==> %s\n' "$*"; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "browser-deps.sh: need root to run: $*" >&2
        exit 1
    fi
}

missing=()
[[ -x "${OMNISTOCK_CHROMIUM:-/usr/bin/chromium}" ]] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ! command -v fc-list >/dev/null 2>&1 || ! fc-list :lang=zh-tw family | grep -q .; then
    missing+=(fonts-wqy-microhei)
fi
if ((${#missing[@]})); then
    say "installing Debian packages for the browser test: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
    as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when the lock file changed since the last install.
dir="$ROOT/tests/browser"
stamp="$dir/node_modules/.omnistock-lock"
if ! cmp -s "$dir/package-lock.json" "$stamp" 2>/dev/null; then
    say "npm ci (tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
fi
