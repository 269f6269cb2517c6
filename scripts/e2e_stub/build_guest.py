#!/usr/bin/env python3
"""Build (or reuse) the i2c-stub guest: Debian's stock kernel + a busybox initramfs.

The guest boots Debian's own kernel so the board server runs against the real
i2c-core / i2c-dev / i2c-stub code, not a fake.  Its modules come from the
linux-image package (``apt-get download`` + ``dpkg -x``), the userspace is
static busybox, and the board server itself runs from the host's file tree,
shared read-only over 9p.

Output (printed as the last line, a directory)::

    ${BUSBRIDGE_CACHE:-$HOME/.cache/busbridge}/e2e_stub/<key>/
        vmlinuz  initramfs.cpio.gz  manifest.json

``<key>`` hashes this script, the init script and the kernel package version,
so a change to any of them builds a new guest; an existing complete build is
reused.  Needs: apt-get (with current package lists), dpkg, modinfo (kmod),
cpio, gzip, busybox-static.  Runs as any user.
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
        mods = module_closure(x / "lib" / "modules" / kver, wanted or WANTED)
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
             "modules": [m.name for m in mods]}, indent=2) + "\n")
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
    for tool in ("apt-get", "apt-cache", "dpkg", "modinfo", "cpio", "gzip"):
        if args.check and tool not in ("apt-cache",):
            continue
        if shutil.which(tool) is None:
            sys.exit(f"e2e_stub: {tool} not found (apt-get install kmod cpio)")
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
