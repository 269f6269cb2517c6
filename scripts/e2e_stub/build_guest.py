#!/usr/bin/env python3
"""Build (or reuse) the board guest: Debian's stock kernel + a busybox initramfs.

The guest boots Debian's own kernel so the board server runs against the real
i2c-core / i2c-dev / i2c-stub code, not a fake.  Its modules come from the
linux-image package (``apt-get download`` + ``dpkg -x``), the userspace is
static busybox, and the board server itself runs from the host's file tree,
shared read-only over 9p.

Debian does not enable ``CONFIG_I2C_VIRTIO``, so ``i2c-virtio.ko`` is built
out of tree from the same kernel version's source (``linux-source-X.Y``)
against that kernel's headers (``linux-headers-*``, ``linux-kbuild-*``; a few
seconds): with a ``vhost-user-i2c-pci`` device the guest then has a full-I2C
adapter (``I2C_RDWR``) next to the SMBus-only i2c-stub.

Output (printed as the last line, a directory)::

    ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/e2e_stub/<key>/
        vmlinuz  initramfs.cpio.gz  manifest.json

``<key>`` hashes this script, the init script and the kernel package version,
so a change to any of them builds a new guest; an existing complete build is
reused.  Needs: apt-get (with current package lists), dpkg, modinfo (kmod),
cpio, gzip, busybox-static, make and gcc (the compiler the kernel was built
with: gcc-12 on bookworm).  Runs as any user.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT = HERE / "init.sh"
#: Guest modules wanted; their dependencies are added from the .ko files' own metadata.
WANTED = ["virtio_pci", "virtio_net", "9pnet_virtio", "9p", "i2c-dev", "i2c-stub"]
BUSYBOX = Path("/bin/busybox")


def log(msg: str) -> None:
    print(f"[e2e_stub] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw: object) -> str:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout  # type: ignore[call-overload,no-any-return]


def kernel_package(explicit: str | None) -> tuple[str, str]:
    """(package, version) of the kernel image ``linux-image-amd64`` currently points at."""
    pkg = explicit
    if pkg is None:
        deps = run(["apt-cache", "depends", "linux-image-amd64"])
        names = [line.split(":", 1)[1].strip() for line in deps.splitlines()
                 if line.strip().startswith("Depends:") and "linux-image-" in line]
        if not names:
            sys.exit("e2e_stub: cannot resolve linux-image-amd64 (run apt-get update first)")
        pkg = names[0]
    policy = run(["apt-cache", "policy", pkg])
    cand = [ln.split(":", 1)[1].strip() for ln in policy.splitlines()
            if ln.strip().startswith("Candidate:")]
    if not cand or cand[0] == "(none)":
        sys.exit(f"e2e_stub: no candidate version for {pkg} (run apt-get update first)")
    return pkg, cand[0]


def cache_root() -> Path:
    base = os.environ.get("BUSBRIDGE_CACHE") or str(Path.home() / ".cache" / "busbridge")
    return Path(base) / "e2e_stub"


def module_closure(moddir: Path, wanted: list[str]) -> list[Path]:
    """Module files in load order (dependencies first)."""
    files: dict[str, Path] = {}
    for p in moddir.rglob("*.ko"):
        files[p.stem.replace("-", "_")] = p
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        seen.add(key)
        path = files.get(key)
        if path is None:
            sys.exit(f"e2e_stub: module {name} not in the kernel package (built in?)")
        deps = run(["modinfo", "-F", "depends", str(path)]).strip()
        for d in filter(None, deps.split(",")):
            visit(d)
        order.append(path)

    for w in wanted:
        visit(w)
    return order


def fetch_debs(names: list[str], version: str, dest: Path) -> None:
    """``apt-get download`` each ``name=version`` into ``dest``."""
    run(["apt-get", "download", *[f"{n}={version}" for n in names]], cwd=dest)


def build_i2c_virtio(t: Path, kver: str, version: str) -> Path:
    """``i2c-virtio.ko`` for kernel ``kver``, built out of tree; returns the module file.

    The headers package's Makefile includes its ``-common`` sibling by absolute
    path, so that path is pointed at the unpacked copy; nothing is installed.
    """
    headers = f"linux-headers-{kver}"
    deps = run(["apt-cache", "depends", f"{headers}={version}"])
    names = [headers] + [ln.split(":", 1)[1].strip() for ln in deps.splitlines()
                         if ln.strip().startswith("Depends:") and "linux-" in ln
                         and "linux-compiler" not in ln]
    debs = t / "headers-debs"
    debs.mkdir()
    log(f"downloading {' '.join(names)} (about 15 MB)")
    fetch_debs(names, version, debs)
    root = t / "headers"
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg", "-x", str(deb), str(root)])
    kdir = root / "usr" / "src" / headers
    mk = kdir / "Makefile"
    mk.write_text(mk.read_text().replace("/usr/src/", f"{root}/usr/src/"))

    series = ".".join(kver.split(".")[:2])  # 6.1.0-57-amd64 -> 6.1
    src_pkg = f"linux-source-{series}"
    tarball = Path(f"/usr/src/{src_pkg}.tar.xz")
    installed = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", src_pkg],
                               capture_output=True, text=True).stdout.strip()
    if installed != version or not tarball.exists():
        log(f"downloading {src_pkg} {version} (about 140 MB; {src_pkg} {installed or 'absent'} "
            "installed)")
        src_debs = t / "source-debs"
        src_debs.mkdir()
        fetch_debs([src_pkg], version, src_debs)
        run(["dpkg", "-x", str(next(src_debs.glob("*.deb"))), str(t / "source")])
        tarball = t / "source" / "usr" / "src" / f"{src_pkg}.tar.xz"
    mod = t / "i2c-virtio"
    mod.mkdir()
    run(["tar", "-xf", str(tarball), "-C", str(mod), "--wildcards", "--strip-components=4",
         "*/drivers/i2c/busses/i2c-virtio.c"])
    (mod / "Kbuild").write_text("obj-m += i2c-virtio.o\n")
    log(f"building i2c-virtio.ko against {headers}")
    run(["make", "-C", str(kdir), f"M={mod}", "modules"])
    ko = mod / "i2c-virtio.ko"
    magic = run(["modinfo", "-F", "vermagic", str(ko)]).split()
    if not magic or magic[0] != kver:
        sys.exit(f"e2e_stub: i2c-virtio.ko has vermagic {magic[:1]}, the kernel is {kver}")
    return ko


def build(out: Path, pkg: str, version: str, init: Path = INIT,
          wanted: list[str] | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="busbridge-e2e-stub-") as tmp:
        t = Path(tmp)
        log(f"downloading {pkg} {version} (about 70 MB)")
        run(["apt-get", "download", f"{pkg}={version}"], cwd=t)
        deb = next(t.glob("*.deb"))
        log("extracting the kernel package")
        x = t / "x"
        run(["dpkg", "-x", str(deb), str(x)])
        vmlinuz = next((x / "boot").glob("vmlinuz-*"))
        kver = vmlinuz.name.removeprefix("vmlinuz-")
        moddir = x / "lib" / "modules" / kver
        virtio_ko = build_i2c_virtio(t, kver, version)
        needs = run(["modinfo", "-F", "depends", str(virtio_ko)]).strip()
        mods = module_closure(moddir, (wanted or WANTED) + [d for d in needs.split(",") if d])
        mods.append(virtio_ko)
        log(f"kernel {kver}; modules: {' '.join(m.stem for m in mods)}")

        root = t / "root"
        for d in ("bin", "sbin", "proc", "sys", "dev", "tmp", "host", "mods", "etc"):
            (root / d).mkdir(parents=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        for applet in ("sh", "mount", "insmod", "ip", "cat", "grep", "ls", "mkdir", "chroot",
                       "poweroff", "sleep", "echo", "basename", "dmesg", "sed", "timeout"):
            (root / "bin" / applet).symlink_to("busybox")
        load = []
        for i, m in enumerate(mods):
            name = f"{i:02d}-{m.name}"
            shutil.copy2(m, root / "mods" / name)
            load.append(name)
        (root / "mods" / "order").write_text("\n".join(load) + "\n")
        shutil.copy2(init, root / "init")
        (root / "init").chmod(0o755)

        log("packing the initramfs")
        listing = run(["find", ".", "-print0"], cwd=root)
        staging = out.with_name(out.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with open(staging / "initramfs.cpio.gz", "wb") as f:
            cpio = subprocess.Popen(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=root,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            gz = subprocess.Popen(["gzip", "-9n"], stdin=cpio.stdout, stdout=f)
            assert cpio.stdin is not None
            assert cpio.stdout is not None
            cpio.stdout.close()
            cpio.stdin.write(listing.encode())
            cpio.stdin.close()
            if cpio.wait() or gz.wait():
                sys.exit("e2e_stub: cpio/gzip failed")
        shutil.copy2(vmlinuz, staging / "vmlinuz")
        (staging / "manifest.json").write_text(json.dumps(
            {"package": pkg, "version": version, "kernel": kver,
             "modules": [m.name for m in mods],
             "built_out_of_tree": {virtio_ko.name: f"linux-source {version}"}},
            indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", help="kernel image package (default: what linux-image-amd64 "
                                      "depends on)")
    ap.add_argument("--check", action="store_true",
                    help="only print the build directory if it is already built; exit 1 if not")
    ap.add_argument("--init", type=Path, default=INIT,
                    help="the guest's /init (default: the i2c-stub board server's)")
    ap.add_argument("--extra-modules", default="",
                    help="more stock kernel modules to load, comma-separated (e.g. cuse)")
    args = ap.parse_args()
    extra = [m for m in args.extra_modules.split(",") if m]
    for tool in ("apt-get", "apt-cache", "dpkg", "modinfo", "cpio", "gzip", "make", "gcc"):
        if args.check and tool not in ("apt-cache",):
            continue
        if shutil.which(tool) is None:
            sys.exit(f"e2e_stub: {tool} not found (apt-get install kmod cpio build-essential)")
    if not BUSYBOX.exists() and not args.check:
        sys.exit(f"e2e_stub: {BUSYBOX} missing (apt-get install busybox-static)")
    pkg, version = kernel_package(args.package)
    h = hashlib.sha256()
    bb = BUSYBOX.read_bytes() if BUSYBOX.exists() else b""
    parts = [Path(__file__).read_bytes(), args.init.read_bytes(), f"{pkg}={version}".encode(), bb]
    if extra:
        parts.append(",".join(extra).encode())
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    out = cache_root() / h.hexdigest()[:16]
    if (out / "manifest.json").exists():
        log(f"cached: {out}")
    elif args.check:
        log(f"not built ({pkg} {version}): run scripts/e2e_stub/build_guest.py")
        sys.exit(1)
    else:
        build(out, pkg, version, args.init, WANTED + extra)
        log(f"built: {out}")
    print(out)


if __name__ == "__main__":
    main()
