#!/usr/bin/env bash
# Build the pinned Kubernetes test tools from source (Go module proxy only)
# into a cache directory outside the repo.
#
#   BIN=$(tests/tools/build.sh | tail -1)           # all tools
#   BIN=$(tests/tools/build.sh etcd kubectl | tail -1)
#
# stdout: only the bin dir, as the last line. Progress goes to stderr.
# Env:
#   STOCKADE_TOOLS_DIR   cache root (default /var/cache/stockade/tools)
#   STOCKADE_TOOLS_JOBS  go build -p (default 2)
#   GO                   go binary (default: `go` on PATH, else /usr/local/go/bin/go)
# See README.md next to this script.
set -euo pipefail

# Bump to force a rebuild of every binary (e.g. after changing build flags
# below). Version bumps of the tools themselves change go.mod/go.sum, which
# already changes the cache key.
TOOLS_BUILD_VERSION=2

# Values stamped into the binaries. Keep in step with the go.mod pins.
KUBE_VERSION=v1.37.2
HELM_VERSION=v3.22.0
ETCD_VERSION=v3.7.3
CNI_VERSION=v1.3.1
CONTAINERD_VERSION=v2.4.2
AGNHOST_VERSION=2.66.1   # the agnhost tag Kubernetes v1.37.2's e2e suite uses
BUILD_DATE=2026-01-01T00:00:00Z   # fixed, for reproducible binaries

ALL_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet etcd helm cnitool
           containerd containerd-shim-runc-v2 ctr e2e.test agnhost)
MODULE_DIRS=(kube etcd helm cni containerd e2e)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${STOCKADE_TOOLS_DIR:-/var/cache/stockade/tools}
JOBS=${STOCKADE_TOOLS_JOBS:-2}

log() { printf '%s\n' "build.sh: $*" >&2; }
die() { printf '%s\n' "build.sh: ERROR: $*" >&2; exit 1; }

# ---- per-tool build recipe -------------------------------------------------
# Sets: mod (module dir under tests/tools), pkg (Go package), ldx (extra
# ldflags), tags, want (substring `<tool> <verargs>` output must contain).
recipe() {
  local kx="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kx+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=37"
    kx+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
  done
  tags=""; verargs=(--version); want=""; testbin=""
  local cx="-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  cx+=" -X github.com/containerd/containerd/v2/version.Revision=$CONTAINERD_VERSION"
  cx+=" -X github.com/containerd/containerd/v2/version.Package=github.com/containerd/containerd/v2"
  local ctags=urfave_cli_no_docs,osusergo,netgo,static_build   # as upstream's static release
  case "$1" in
    kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubectl|kubelet)
      mod=kube; pkg=k8s.io/kubernetes/cmd/$1; ldx=$kx
      tags=selinux,notest,grpcnotrace   # as upstream hack/lib/golang.sh
      want="$KUBE_VERSION"
      if [[ $1 == kubectl ]]; then verargs=(version --client); fi
      ;;
    etcd)
      mod=etcd; pkg=go.etcd.io/etcd/server/v3; want="etcd Version: ${ETCD_VERSION#v}"
      ldx="-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
      ;;
    helm)
      mod=helm; pkg=helm.sh/helm/v3/cmd/helm; verargs=(version); want="$HELM_VERSION"
      ldx="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
      ldx+=" -X helm.sh/helm/v3/internal/version.metadata="
      ldx+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      # Default capabilities (helm template / lint) follow the client-go minor.
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ldx+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=37"
      done
      ;;
    cnitool)
      mod=cni; pkg=github.com/containernetworking/cni/cnitool; ldx=""; verargs=()
      ;;
    containerd|ctr)
      mod=containerd; pkg=github.com/containerd/containerd/v2/cmd/$1; ldx=$cx; tags=$ctags
      want="$CONTAINERD_VERSION"
      ;;
    containerd-shim-runc-v2)
      mod=containerd; pkg=github.com/containerd/containerd/v2/cmd/$1; ldx=$cx; tags=$ctags,no_grpc
      verargs=(-v); want="$CONTAINERD_VERSION"
      ;;
    e2e.test)
      # The upstream e2e suite is a test binary (go test -c), stamped like the kube tools.
      mod=e2e; pkg=k8s.io/kubernetes/test/e2e; ldx=$kx; testbin=1
      # --list-images prints the images the suite pulls; tests/images tags agnhost as this.
      verargs=(--list-images); want="registry.k8s.io/e2e-test-images/agnhost:2.66.1"
      ;;
    agnhost)
      # Version as the tag e2e.test expects of the agnhost image (test/utils/image/manifest.go).
      mod=e2e; pkg=k8s.io/kubernetes/test/images/agnhost; ldx="-X main.Version=$AGNHOST_VERSION"
      want="version $AGNHOST_VERSION"
      ;;
    *) die "unknown tool '$1' (known: ${ALL_TOOLS[*]})" ;;
  esac
}

# ---- arguments ---------------------------------------------------------------
case "${1:-}" in
  -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
esac
if (($#)); then TOOLS=("$@"); else TOOLS=("${ALL_TOOLS[@]}"); fi
for t in "${TOOLS[@]}"; do recipe "$t"; done   # validates names

# ---- cache keys ----------------------------------------------------------------
# One key per module dir (its go.mod/go.sum, the build-flag version and the dir name), so a
# change to one module rebuilds only its tools. Binaries live in $CACHE/mod/<dir>-<key>/;
# $CACHE/<set key>/bin holds symlinks to the current binaries of every module.
mod_key() {
  local d=$1 f
  {
    printf 'build-version %s\nmodule %s\n' "$TOOLS_BUILD_VERSION" "$d"
    for f in go.mod go.sum; do
      [[ -f $HERE/$d/$f ]] || die "missing $HERE/$d/$f"
      printf '== %s/%s\n' "$d" "$f"; cat "$HERE/$d/$f"
    done
  } | sha256sum | cut -c1-12
}
declare -A MODDIR
setkeys=""
for d in "${MODULE_DIRS[@]}"; do
  MODDIR[$d]=$CACHE/mod/$d-$(mod_key "$d")
  setkeys+="${MODDIR[$d]##*/} "
done
KEY=$(printf '%s' "$setkeys" | sha256sum | cut -c1-12)
BIN=$CACHE/$KEY/bin

tool_path() { recipe "$1"; printf '%s/%s' "${MODDIR[$mod]}" "$1"; }

missing=()
for t in "${TOOLS[@]}"; do [[ -x $(tool_path "$t") ]] || missing+=("$t"); done

link_tools() {
  # $BIN/<tool> -> the module's binary, for every tool already built.
  local t p
  mkdir -p "$BIN" || return 1
  for t in "${ALL_TOOLS[@]}"; do
    p=$(tool_path "$t")
    if [[ -x $p && $(readlink "$BIN/$t" 2>/dev/null) != "$p" ]]; then
      ln -sfn "$p" "$BIN/.$t.$$" && mv -Tf "$BIN/.$t.$$" "$BIN/$t"
    fi
  done
}

update_link() {
  # Atomic replace of $CACHE/bin -> $KEY/bin.
  local cur; cur=$(readlink "$CACHE/bin" 2>/dev/null || true)
  [[ $cur == "$KEY/bin" ]] && return 0
  ln -sfn "$KEY/bin" "$CACHE/.bin.$$" && mv -Tf "$CACHE/.bin.$$" "$CACHE/bin"
}

if ((${#missing[@]} == 0)); then
  if [[ -w $CACHE ]]; then { link_tools && update_link; } || true; fi
  echo "$BIN"; exit 0
fi

# ---- build -------------------------------------------------------------------
mkdir -p "$BIN" "$CACHE/mod" 2>/dev/null || die "cannot create $BIN (set STOCKADE_TOOLS_DIR to a writable dir)"
[[ -w $BIN && -w $CACHE/mod ]] || die "$CACHE is not writable (set STOCKADE_TOOLS_DIR to a writable dir)"

GO=${GO:-$(command -v go || true)}
if [[ -z $GO && -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; fi
[[ -n $GO && -x $GO ]] || die "go not found (need Go >= 1.26 on PATH or GO=/path/to/go) to build: ${missing[*]}"
gov=$("$GO" env GOVERSION) || die "'$GO env GOVERSION' failed"
case $gov in
  go1.2[6-9]*|go1.[3-9][0-9]*) ;;
  *) die "$gov is too old; these modules need go >= 1.26" ;;
esac

# One build at a time per cache root; a second caller waits, then finds the
# binaries already in place.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then log "waiting for another build.sh holding $CACHE/.lock..."; flock 9; fi
missing2=()
for t in "${missing[@]}"; do [[ -x $(tool_path "$t") ]] || missing2+=("$t"); done
missing=("${missing2[@]+"${missing2[@]}"}")

export GOTOOLCHAIN=local          # never fetch another toolchain
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0              # static binaries, like upstream releases
export GOWORK=off

tmp=""
trap 'if [[ -n $tmp ]]; then rm -f "$tmp"; fi' EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP
total_start=$(date +%s)
n=${#missing[@]}; i=0
log "cache key $KEY, $gov, building $n of ${#TOOLS[@]}: ${missing[*]}"
for t in "${missing[@]}"; do
  i=$((i + 1))
  recipe "$t"
  log "building $t ($i/$n)..."
  start=$(date +%s)
  out_dir=${MODDIR[$mod]}; mkdir -p "$out_dir"
  tmp=$(mktemp "$out_dir/.$t.tmp.XXXXXX")
  if [[ -n $testbin ]]; then gocmd=(test -c); else gocmd=(build); fi
  if ! (cd "$HERE/$mod" && nice -n 10 "$GO" "${gocmd[@]}" -p "$JOBS" -trimpath \
          ${tags:+-tags "$tags"} -ldflags "-s -w $ldx" -o "$tmp" "$pkg"); then
    die "go ${gocmd[*]} of $t ($pkg in tests/tools/$mod) failed"
  fi
  chmod 0755 "$tmp"
  if ((${#verargs[@]})); then
    out=$("$tmp" "${verargs[@]}" 2>&1) || die "$t ${verargs[*]} failed: $out"
    [[ $out == *"$want"* ]] || die "$t ${verargs[*]} printed '$out', expected '$want'"
  fi
  mv -f "$tmp" "$out_dir/$t"; tmp=""
  log "built $t in $(($(date +%s) - start))s"
done
link_tools
update_link
log "done: $n built in $(($(date +%s) - total_start))s -> $BIN"
echo "$BIN"
