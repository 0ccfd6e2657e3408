#!/bin/sh
# Sets lxss up on a Debian 12 machine (run as root) and, unless told `deps`,
# runs a first command in the built-in busybox distribution.
#
#   ./setup.sh          install everything, then: lxss --install busybox; lxss -d busybox -- ...
#   ./setup.sh deps     install everything, run nothing (used by ./test.sh and .ci/run)
#   ./setup.sh deb      build the Debian package into dist/ (install: apt install ./dist/lxss_*.deb)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-demo}
venv="$here/.venv"

die() { echo "setup.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run me as root (lxssd is a root service)"

# Debian packages the service, the tests and the benchmarks use.
packages="python3-venv busybox-static qemu-system-x86 linux-image-amd64 debootstrap dnsmasq-base uidmap e2fsprogs zstd xz-utils bzip2 gzip
  tmux procps psmisc iproute2 iptables nftables util-linux hyperfine bubblewrap
  docker-registry skopeo umoci libarchive-tools podman
  gcc libc6-dev debhelper dh-python dpkg-dev fakeroot lintian bash-completion zsh fish man-db groff-base"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup.sh: installing$missing"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq $missing >/dev/null
fi

# A virtual environment on Debian's interpreter for the development tools.
# lxss itself needs only the standard library.
stamp="$venv/.lxss-installed"
want=$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python3" ]; then
    /usr/bin/python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$here[dev,bench]"
    echo "$want" > "$stamp"
fi

# lxss's native tools for distributions (lxss-host-exec, lxsspath): static, so they run in
# any distribution, busybox included (see docs/interop.md).
native="$here/src/lxss/guest/native"
if [ ! -x "$native/bin/lxss-guest" ] || [ "$native/lxss-guest.c" -nt "$native/bin/lxss-guest" ]; then
    mkdir -p "$native/bin"
    gcc -static -O2 -Wall -Wextra -Werror -o "$native/bin/lxss-guest.tmp" "$native/lxss-guest.c"
    mv "$native/bin/lxss-guest.tmp" "$native/bin/lxss-guest"
fi
for tool in lxss-host-exec lxsspath; do
    ln -sf lxss-guest "$native/bin/$tool"
done

# Lean launchers: `-I -S` skips site-packages, which costs more than the whole
# of lxss's own start-up (see bench/).
for role in lxss:lxss.cli.main:run lxssd:lxss.service.main:main; do
    name=${role%%:*}; entry=${role#*:}; module=${entry%:*}; function=${entry#*:}
    cat > "/usr/local/bin/$name.tmp" <<LAUNCHER
#!$venv/bin/python3 -IS
import sys
sys.path.insert(0, "$here/src")
from $module import $function
sys.exit($function())
LAUNCHER
    chmod 755 "/usr/local/bin/$name.tmp"
    mv "/usr/local/bin/$name.tmp" "/usr/local/bin/$name"
done

# The manual, the shell completions and `wsl` (only where no other wsl is), generated from
# the tree's own tables into /usr/local/share.
generated=$(mktemp -d)
PYTHONPATH="$here/src" "$venv/bin/python3" -B -m lxss.packaging "$generated"
share=/usr/local/share
for page in "$generated"/man/*; do
    section=${page##*.}
    install -D -m 644 "$page" "$share/man/man$section/$(basename "$page")"
done
install -D -m 644 "$generated/completion/bash/lxss" "$share/bash-completion/completions/lxss"
ln -sf lxss "$share/bash-completion/completions/wsl"
install -D -m 644 "$generated/completion/zsh/_lxss" "$share/zsh/site-functions/_lxss"
install -D -m 644 "$generated/completion/fish/lxss.fish" "$share/fish/vendor_completions.d/lxss.fish"
ln -sf lxss.fish "$share/fish/vendor_completions.d/wsl.fish"
rm -rf "$generated"
wsl=$(command -v wsl || true)
if [ -z "$wsl" ] || { [ "$wsl" = /usr/local/bin/wsl ] && [ -L /usr/local/bin/wsl ]; }; then
    ln -sf lxss /usr/local/bin/wsl
    ln -sf lxss.1 "$share/man/man1/wsl.1"
else
    echo "setup.sh: $wsl exists, so wsl stays what it is (lxss is lxss)"
fi

# Machines with systemd get socket activation; others start lxssd on demand.
if [ -d /run/systemd/system ]; then
    sed "s#@LXSSD@#/usr/local/bin/lxssd#" "$here/data/systemd/lxssd.service" > /etc/systemd/system/lxssd.service
    cp "$here/data/systemd/lxssd.socket" /etc/systemd/system/lxssd.socket
    systemctl daemon-reload
    systemctl enable --now lxssd.socket >/dev/null 2>&1 || true
fi

[ "$mode" = deps ] && exit 0

if [ "$mode" = deb ]; then
    # dpkg-buildpackage writes beside the source tree: build in a copy of it.
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    mkdir "$build/lxss"
    tar -C "$here" --exclude=./.venv --exclude=./.git --exclude=./dist --exclude='__pycache__' \
        --exclude='.*_cache' --exclude=./src/lxss/guest/native/bin -cf - . | tar -C "$build/lxss" -xf -
    (cd "$build/lxss" && dpkg-buildpackage -b -us -uc -Zxz >"$build/build.log" 2>&1) ||
        { tail -n 30 "$build/build.log" >&2; die "dpkg-buildpackage failed"; }
    mkdir -p "$here/dist"
    cp "$build"/lxss_*.deb "$here/dist/"
    ls "$here"/dist/lxss_*.deb
    exit 0
fi

if ! lxss --list --quiet 2>/dev/null | grep -qx busybox; then
    lxss --install busybox
fi
echo "\$ lxss -d busybox -- 'echo Hello from \$(hostname) running \$(uname -sr); id'"
exec lxss -d busybox -- 'echo Hello from $(hostname) running $(uname -sr); id'
