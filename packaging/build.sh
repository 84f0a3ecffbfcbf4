#!/usr/bin/env bash
# Builds dist/smsmilter_<ver>_amd64.deb and dist/smsmilter-<ver>.x86_64.rpm
# (make package). Reproducible: the same commit, tree and VERSION give
# byte-identical packages.
#
# Environment (all optional):
#   VERSION          the version; default `git describe --tags --always --dirty`.
#                    Made package-legal: v1.2.3 -> 1.2.3, v1.2.3-rc1 -> 1.2.3~rc1,
#                    v1.2.3-4-gabc1234-dirty -> 1.2.3+4.gabc1234.dirty, and with
#                    no tag at all 0.0.0+<commits>.g<hash>[.dirty]. The binary is
#                    stamped with the same string (smsmilter --version).
#   SOURCE_DATE_EPOCH  every timestamp in the packages; default the last
#                    commit's time.
#   DIST             output directory; default dist.
#   NFPM             an nfpm binary to use; default v2.48.0, installed once
#                    with `go install` into $TOOLS_DIR (not the project's go.mod).
#   TOOLS_DIR        default ${XDG_CACHE_HOME:-$HOME/.cache}/smsmilter-tools.
#   PKG_MAINTAINER   the Maintainer/Packager field.
#   GO               the go command; default go.
# Test hooks (packaging/ci.sh):
#   SMSMILTER_BINARY package this binary instead of building ./cmd/smsmilter.
#   PKG_CONFIG       package this file as the default config instead of
#                    packaging/smsmilter.yaml.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC

cd "$(dirname "$0")/.."
NFPM_VERSION=v2.48.0
GO=${GO:-go}

die() { echo "packaging/build.sh: $*" >&2; exit 1; }

# --- version -----------------------------------------------------------
git_ok() { git rev-parse --git-dir >/dev/null 2>&1; }

raw=${VERSION:-}
untagged=
if git_ok; then
	described=$(git describe --tags --always --dirty)
	: "${raw:=$described}"
	# `git describe --always` falls back to the bare hash when there is no
	# tag (also when make passes that on as VERSION).
	if [ "$raw" = "$described" ] && ! git describe --tags >/dev/null 2>&1; then untagged=1; fi
fi
: "${raw:=dev}"

# normalize_version RAW: a version both dpkg and rpm accept and order
# sensibly (no "-", which is dpkg's revision separator and not allowed in
# an rpm Version; "~" sorts before the release, "+" after it).
normalize_version() {
	local v=${1#v} dirty="" extra="" base
	case $v in *-dirty) dirty=1; v=${v%-dirty} ;; esac
	if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
		base=${BASH_REMATCH[1]}
		extra="${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
	else
		base=$v
	fi
	if [ -n "$untagged" ] || [[ ! $base =~ ^[0-9] ]]; then
		# No tag: an abbreviated hash, or "dev".
		local count=0 hash=$base
		if git_ok; then count=$(git rev-list --count HEAD 2>/dev/null || echo 0); fi
		base=0.0.0
		if [[ $hash =~ ^[0-9a-f]{4,}$ ]]; then extra="$count.g$hash"; else extra=$hash; fi
	fi
	base=${base//-/\~}
	v=$base
	if [ -n "$extra" ]; then v="$v+$extra"; fi
	if [ -n "$dirty" ]; then
		if [ -n "$extra" ]; then v="$v.dirty"; else v="$v+dirty"; fi
	fi
	printf '%s\n' "$v"
}

ver=$(normalize_version "$raw")
export PKG_MAINTAINER=${PKG_MAINTAINER:-smsmilter maintainers <maintainers@smsmilter.invalid>}
[[ $ver =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "version \"$ver\" (from \"$raw\") is not usable in a package: digits first, then letters, digits, . + ~"

if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	if git_ok; then
		SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
	else
		die "SOURCE_DATE_EPOCH is not set and there is no git history to take it from"
	fi
fi
[[ $SOURCE_DATE_EPOCH =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH is not a number of seconds"
export SOURCE_DATE_EPOCH

DIST=${DIST:-dist}
mkdir -p "$DIST"
DIST=$(cd "$DIST" && pwd)
STAGE=$DIST/.stage
rm -rf "$STAGE"
mkdir -p "$STAGE/doc/examples"

deb=$DIST/smsmilter_${ver}_amd64.deb
rpm=$DIST/smsmilter-${ver}.x86_64.rpm
echo "smsmilter $ver (from \"$raw\"), SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"

# --- nfpm --------------------------------------------------------------
if [ -z "${NFPM:-}" ]; then
	TOOLS_DIR=${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/smsmilter-tools}
	NFPM=$TOOLS_DIR/nfpm-$NFPM_VERSION
	if [ ! -x "$NFPM" ]; then
		echo "installing nfpm $NFPM_VERSION into $TOOLS_DIR"
		mkdir -p "$TOOLS_DIR/bin.tmp"
		# Outside the checkout: `go install pkg@version` never touches go.mod.
		(cd "$TOOLS_DIR" && GOFLAGS='' GOBIN="$TOOLS_DIR/bin.tmp" \
			"$GO" install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION")
		mv "$TOOLS_DIR/bin.tmp/nfpm" "$NFPM"
		rmdir "$TOOLS_DIR/bin.tmp"
	fi
fi

# --- the binary --------------------------------------------------------
bin=$STAGE/smsmilter
if [ -n "${SMSMILTER_BINARY:-}" ]; then
	echo "packaging $SMSMILTER_BINARY (SMSMILTER_BINARY), not a fresh build"
	cp "$SMSMILTER_BINARY" "$bin"
else
	# Static (no cgo), no local paths (-trimpath), no build ID, the version
	# stamped; the module's go.mod and go.sum are used as they are.
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath \
		-ldflags "-s -w -buildid= -X main.version=$ver" \
		-o "$bin" ./cmd/smsmilter ||
		die "go build ./cmd/smsmilter failed"
	got=$("$bin" --version) || die "$bin --version failed"
	[ "$got" = "smsmilter $ver" ] || die "$bin --version says \"$got\", expected \"smsmilter $ver\""
fi
chmod 0755 "$bin"

# --- the packaged config -----------------------------------------------
conf=${PKG_CONFIG:-packaging/smsmilter.yaml}
cp "$conf" "$STAGE/smsmilter.yaml"
if ! out=$("$bin" check-config --config "$STAGE/smsmilter.yaml" 2>&1); then
	printf '%s\n' "$out" >&2
	die "the packaged config $conf does not pass check-config"
fi

# --- man page ----------------------------------------------------------
man_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
sed -e "s/^\.TH SMSMILTER 8 .*/.TH SMSMILTER 8 \"$man_date\" \"smsmilter $ver\" \"System Administration\"/" \
	packaging/smsmilter.8 | gzip -9n >"$STAGE/smsmilter.8.gz"

# --- /usr/share/doc/smsmilter ------------------------------------------
doc=$STAGE/doc
cp packaging/doc/README.Postfix "$doc/"
for f in examples/smsmilter.yaml examples/quickstart.yaml; do
	if [ -f "$f" ]; then cp "$f" "$doc/examples/"; fi
done
for d in examples/postfix examples/sendmail; do
	if [ -d "$d" ]; then cp -r "$d" "$doc/examples/"; fi
done
if [ -f docs/postfix.md ]; then cp docs/postfix.md "$doc/"; fi

# changelog.gz, in Debian's format: this version and the commits since the
# last tag (or all of them).
{
	echo "smsmilter ($ver) unstable; urgency=medium"
	echo
	if git_ok; then
		range=HEAD
		if last=$(git describe --tags --abbrev=0 2>/dev/null); then range="$last..HEAD"; fi
		git log --no-merges --format='  * %s' "$range" | head -n 200
		if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
			echo "  * Built from a working tree with uncommitted changes."
		fi
	else
		echo "  * Built outside a git checkout."
	fi
	echo
	echo " -- $PKG_MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.gz"

# copyright: smsmilter itself, then the license of every module compiled
# into /usr/bin/smsmilter (it is one static binary) and of Go itself.
{
	cat packaging/doc/copyright
	goroot=$("$GO" env GOROOT)
	printf '\n\n==> Go standard library and runtime (%s)\n\n' "$("$GO" env GOVERSION)"
	cat "$goroot/LICENSE"
	"$GO" list -e -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/smsmilter 2>/dev/null |
		sort -u | while read -r path version dir; do
			printf '\n\n==> %s %s\n\n' "$path" "$version"
			found=
			if [ -n "$dir" ] && [ -d "$dir" ]; then
				for lf in $(find "$dir" -maxdepth 1 -type f \( -iname 'LICEN[CS]E*' -o -iname 'COPYING*' -o -iname 'NOTICE*' \) | sort); do
					cat "$lf"
					found=1
				done
			fi
			[ -n "$found" ] || echo "(no license file found in the module; see https://pkg.go.dev/$path?tab=licenses)"
		done
} >"$doc/copyright"

# Modes and mtimes of everything staged: nfpm copies them from the files.
find "$STAGE" -type d -exec chmod 0755 {} +
find "$STAGE" -type f ! -path "$bin" -exec chmod 0644 {} +
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- packages ----------------------------------------------------------
export PKG_VERSION=$ver PKG_STAGE=$STAGE
rm -f "$deb" "$rpm"
"$NFPM" package --config packaging/nfpm.yaml --packager deb --target "$deb" >/dev/null
"$NFPM" package --config packaging/nfpm.yaml --packager rpm --target "$rpm" >/dev/null
rm -rf "$STAGE"

(cd "$DIST" && sha256sum "$(basename "$deb")" "$(basename "$rpm")")
echo "$deb"
echo "$rpm"
