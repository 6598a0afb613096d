#!/bin/bash
# Builds the Debian package, installs it on this machine with dpkg -i (the unit
# is neither enabled nor started), checks what it installed, then removes and
# purges it and checks that every file it installed is gone. Called by
# scripts/test.sh (as root); needs cargo-deb, man and systemd-analyze, which
# test.sh installs when missing.
#
# The package is built from the dev profile by default, reusing the debug build
# the test suite has already made (cargo-deb warns that it prefers release);
# ENVELOPE_DEB_PROFILE=release builds the real thing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=envelope
BINARIES=(envelope envelopectl example-signer envelope-exec)
PROFILE=${ENVELOPE_DEB_PROFILE:-dev}
started=$SECONDS

fail() { echo "package-test: $*" >&2; exit 1; }

for tool in cargo-deb man systemd-analyze dpkg; do
    command -v "$tool" >/dev/null || fail "$tool is missing (scripts/test.sh installs it)"
done
[ "$(id -u)" = 0 ] || fail "must run as root (dpkg -i)"
# Never touch an envelope someone installed by other means.
status=$(dpkg-query -W -f='${Status}' "$PACKAGE" 2>/dev/null || true)
case "$status" in
    "" | *" not-installed") ;;
    *) fail "the $PACKAGE package is on this machine ($status); purge it first (dpkg -P $PACKAGE)" ;;
esac
for bin in "${BINARIES[@]}"; do
    [ ! -e "/usr/bin/$bin" ] || fail "/usr/bin/$bin exists and is not from the package; not overwriting it"
done

work=$(mktemp -d)
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg -P "$PACKAGE" >/dev/null 2>&1 || echo "package-test: could not purge $PACKAGE" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# --- build -------------------------------------------------------------------
# One cargo invocation for the binaries and the generator. envelope-bench is in
# the selection only so that dependency features resolve as in test.sh's
# benchmark build (testbed widens nix's), which is then reused, not rebuilt.
target_dir=$(cargo metadata -q --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
case "$PROFILE" in
    release) cargo_profile=(--release) out_dir=$target_dir/release ;;
    dev) cargo_profile=() out_dir=$target_dir/debug ;;
    *) cargo_profile=(--profile "$PROFILE") out_dir=$target_dir/$PROFILE ;;
esac
cargo build -q "${cargo_profile[@]}" $(printf -- '-p %s ' "${BINARIES[@]}") -p xtask -p envelope-bench
"$out_dir/xtask" dist-docs >/dev/null
deb=$(cargo deb -q -p "$PACKAGE" --no-build --profile "$PROFILE" --fast -o "$work/" 2>"$work/cargo-deb.log") \
    || { cat "$work/cargo-deb.log" >&2; fail "cargo deb failed"; }
[ -f "$deb" ] || fail "cargo deb printed no package path: $deb"
built=$SECONDS

# Directories that exist before the install are not the package's to remove.
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed -e 's#^\./#/#' | grep -v '^/$' | sort >"$work/contents"
while read -r path; do
    [ -d "$path" ] && echo "${path%/}"
done < <(grep '/$' "$work/contents") >"$work/dirs-before"

# --- install -----------------------------------------------------------------
installed=1
# --path-include: slim images exclude /usr/share/man and /usr/share/doc, which
# are part of what is checked here.
dpkg --path-include='*' -i "$deb" >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log" >&2; fail "dpkg -i failed"; }
dpkg-query -L "$PACKAGE" | grep -v '^/\.$' | sort >"$work/installed"

# The package's version is the crate's, and every binary names its commit
# (common/build.rs): `NAME 0.2.0 (1a2b3c4)`, `-dirty` after the hash when the
# tree was changed; the version alone when built without git.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
deb_version=$(dpkg-query -W -f='${Version}' "$PACKAGE")
[[ "$deb_version" == "$version" || "$deb_version" == "$version"-* ]] \
    || fail "the package's version is $deb_version, the crate's $version"
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
for bin in "${BINARIES[@]}"; do
    [ "$(command -v "$bin")" = "/usr/bin/$bin" ] || fail "$bin is not /usr/bin/$bin on PATH"
    out=$("/usr/bin/$bin" --version)
    if [ -n "$commit" ]; then
        [[ "$out" =~ ^"$bin $version ($commit"(-dirty)?")"$ ]] \
            || fail "$bin --version printed '$out', expected '$bin $version ($commit)'"
    else
        [ "$out" = "$bin $version" ] || fail "$bin --version printed '$out', expected '$bin $version'"
    fi
    [ -f "/usr/share/man/man1/$bin.1.gz" ] || fail "no man page for $bin"
    for completion in "/usr/share/bash-completion/completions/$bin" \
        "/usr/share/zsh/vendor-completions/_$bin" "/usr/share/fish/vendor_completions.d/$bin.fish"; do
        [ -s "$completion" ] || fail "no completion $completion"
    done
    bash -c "source /usr/share/bash-completion/completions/$bin && complete -p $bin" >/dev/null \
        || fail "the bash completion of $bin does not register"
done

pages=0
while read -r page; do
    # groff's warnings (bad macros, unknown escapes) go to stderr: none allowed.
    MANWIDTH=80 man -l "$page" >"$work/page.txt" 2>"$work/man.err" || fail "man -l $page failed: $(cat "$work/man.err")"
    [ ! -s "$work/man.err" ] || fail "man -l $page: $(cat "$work/man.err")"
    grep -q '^NAME' "$work/page.txt" || fail "man -l $page has no NAME section"
    pages=$((pages + 1))
done < <(grep '^/usr/share/man/man1/.*\.1\.gz$' "$work/installed")

# The licences: the package's own copyright file names the third-party
# listing, which names every crate compiled in (tokio among them), and the
# changelog has this version's section.
doc=/usr/share/doc/$PACKAGE
grep -q '^License: Apache-2.0$' "$doc/copyright" || fail "$doc/copyright does not give the licence"
grep -q "$doc/THIRD-PARTY-LICENSES.txt" "$doc/copyright" || fail "$doc/copyright does not name the third-party listing"
cmp -s "$doc/THIRD-PARTY-LICENSES.txt" THIRD-PARTY-LICENSES.txt || fail "$doc/THIRD-PARTY-LICENSES.txt is not the committed listing"
grep -q '^Used by: .*\btokio [0-9]' "$doc/THIRD-PARTY-LICENSES.txt" || fail "the third-party listing does not name tokio"
zgrep -q "^## \[$version\]" "$doc/changelog.gz" || fail "$doc/changelog.gz has no section for $version"

unit=/usr/lib/systemd/system/envelope.service
[ -f "$unit" ] || fail "no unit at $unit"
grep -qx 'EnvironmentFile=-/etc/default/envelope' "$unit" || fail "$unit does not read /etc/default/envelope"
grep -qx 'ExecStart=/usr/bin/envelope' "$unit" || fail "$unit does not run /usr/bin/envelope"
verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $verify"
! grep -q 'envelope.service' <<<"$verify" || fail "systemd-analyze verify $unit: $verify"

# The configuration file is a conffile, and nothing is enabled or running.
dpkg-query -W -f='${Conffiles}\n' "$PACKAGE" | grep -q '^ /etc/default/envelope ' \
    || fail "/etc/default/envelope is not a conffile"
links=$(find /etc/systemd -lname '*envelope.service' 2>/dev/null || true)
[ -z "$links" ] || fail "the install enabled the unit: $links"
if [ -d /run/systemd/system ]; then
    ! systemctl is-active --quiet envelope.service || fail "the install started envelope.service"
fi

# --- remove and purge --------------------------------------------------------
conffiles=$(dpkg-query -W -f='${Conffiles}\n' "$PACKAGE" | awk 'NF {print $1}')
dpkg -r "$PACKAGE" >"$work/dpkg-r.log" 2>&1 || { cat "$work/dpkg-r.log" >&2; fail "dpkg -r failed"; }
while read -r path; do
    [ -d "$path" ] && [ ! -L "$path" ] && continue
    grep -qxF "$path" <<<"$conffiles" && continue  # kept until purge, as Debian does
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "dpkg -r left $path"
done <"$work/installed"
dpkg -P "$PACKAGE" >"$work/dpkg-p.log" 2>&1 || { cat "$work/dpkg-p.log" >&2; fail "dpkg -P failed"; }
installed=0
while read -r path; do
    if [ -d "$path" ] && [ ! -L "$path" ]; then
        grep -qxF "$path" "$work/dirs-before" && continue
        [ -n "$(ls -A "$path")" ] && continue  # someone else's files live there now
        dpkg-query -S "$path" >/dev/null 2>&1 && continue
        fail "dpkg -P left the empty directory $path"
    fi
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "dpkg -P left $path"
done <"$work/installed"

echo "package-test: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB, profile $PROFILE):" \
    "built in $((built - started)) s, checked $pages man pages, installed, verified, removed and purged" \
    "in $((SECONDS - started)) s; its files:"
grep -v '/$' "$work/contents" | sed 's/^/  /'
