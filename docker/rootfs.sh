#!/usr/bin/env bash
# docker/rootfs.sh OUT.tar: a Debian bookworm minbase root file system for `docker import`,
# made with debootstrap from the Debian archive (no container registry is involved).
#
# The archive only serves the current state of each suite, so the pin is recorded rather
# than chosen: OUT.tar's /etc/pyisolate-base lists the Date of each suite's InRelease and
# every installed package with its version (also written to OUT.tar.manifest). With
# DEBIAN_SNAPSHOT=YYYYMMDDTHHMMSSZ the same script reads the snapshot archive of that
# moment instead (a true pin; not reachable from this project's machines, so unverified here).
set -euo pipefail
out=${1:?usage: docker/rootfs.sh OUT.tar}
suite=bookworm
if [[ -n "${DEBIAN_SNAPSHOT:-}" ]]; then
    mirror="http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT"
    security="http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT"
else
    mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
fi
root=$(mktemp -d "${out%/*}/.rootfs.XXXXXX")
chmod 755 "$root" # apt's _apt user reads its lists below it
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root" "$out.partial"
}
trap cleanup EXIT

debootstrap --variant=minbase --components=main "$suite" "$root" "$mirror" >"$out.debootstrap.log" 2>&1 || {
    tail -30 "$out.debootstrap.log" >&2
    exit 1
}
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security $suite-security main
SOURCES
# Images carry no documentation and keep apt from recommending extras.
cat >"$root/etc/apt/apt.conf.d/90pyisolate" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
mount -t proc proc "$root/proc"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
in_root apt-get update -q >/dev/null
in_root apt-get upgrade -y -q >/dev/null # point-release and security updates, as the host has
{
    echo "# Debian $suite minbase made by docker/rootfs.sh; archive state:"
    for f in "$root"/var/lib/apt/lists/*_InRelease; do
        printf '# %s %s\n' "$(basename "$f" | sed 's/_InRelease$//; s/.*_dists_//')" "$(grep -m1 '^Date:' "$f")"
    done
    in_root dpkg-query -W -f '${Package}=${Version}\n' | LC_ALL=C sort
} >"$root/etc/pyisolate-base"
umount "$root/proc"
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/* "$root"/root/.bash_history
cp "$root/etc/pyisolate-base" "$out.manifest"
tar --numeric-owner --xattrs --sort=name -C "$root" -cf "$out.partial" .
mv "$out.partial" "$out"
