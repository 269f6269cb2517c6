"""Build steps beyond pyproject.toml: the native preload library, and the opt-in mypyc build.

* ``bridge/native/libbusbridge_preload.so`` (``busbridge run``'s LD_PRELOAD
  library for native programs, docs/native.md) is compiled from
  ``bridge/native/csrc`` by every build, editable installs included.  Without
  a working C compiler the build goes on without it and says so; busbridge then
  runs as pure Python and ``busbridge run`` explains that native programs
  cannot be served.  It is a plain shared library, not a Python extension: it
  is loaded by the dynamic linker into other programs and never imported.
* ``BUSBRIDGE_COMPILE=1`` builds the hot path with mypyc, and the C decoder of the
  common I2C frame (``protocol/_native.c``, optional at run time).  That build needs
  mypy and a C compiler in the build environment, and the runtime dependencies
  installed first (mypyc type-checks against them), so it is built without
  build isolation; see docs/performance.md.
"""

import ast
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _modules(name: str) -> list[str]:
    """A list of module names from bridge/compiled.py: the one list (read, not imported,
    as the package's dependencies may not be installed yet)."""
    tree = ast.parse(Path(__file__).with_name("bridge").joinpath("compiled.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == name and node.value is not None):
            return list(ast.literal_eval(node.value))
    raise RuntimeError(f"bridge/compiled.py has no {name}")


#: The modules every request runs through, on both sides (bridge/compiled.py says
#: which, and why two modules on the request path stay interpreted).
COMPILED = [m.replace(".", "/") + ".py" for m in _modules("HOT_MODULES")]
#: The compiled build's C extensions (protocol/_native.c: the server's common I2C frame
#: and RESULT); each is optional at run time, the pure path runs without it.
#: Each is its module's .c file plus the parts in the csrc/ directory beside it.
NATIVE = [Extension(m, sources=[m.replace(".", "/") + ".c",
                                *sorted(str(p) for p in Path(m.split(".")[0]).glob("csrc/*.c"))],
                    depends=sorted(str(p) for p in Path(m.split(".")[0]).glob("csrc/*.h")),
                    extra_compile_args=["-std=gnu11", "-O2", "-Wall"])
          for m in _modules("NATIVE_MODULES")]

PRELOAD = Extension(
    "bridge.native.libbusbridge_preload",
    sources=[f"bridge/native/csrc/{n}.c"
             for n in ("preload", "open", "io", "channel", "i2cdev", "spidev")],
    depends=["bridge/native/csrc/bb.h", "bridge/native/csrc/preload.h"],
    extra_compile_args=["-std=gnu11", "-O2", "-fvisibility=hidden", "-pthread"],
    extra_link_args=["-pthread"],
    libraries=["dl"],
)


class BuildExt(build_ext):
    """Names the preload library plainly and lets the package build without a compiler."""

    def get_ext_filename(self, fullname: str) -> str:
        if fullname.split(".")[-1] == PRELOAD.name.split(".")[-1]:
            return os.path.join(*fullname.split(".")) + ".so"
        return str(super().get_ext_filename(fullname))

    def get_export_symbols(self, ext: Extension) -> list[str]:
        if ext is PRELOAD:
            return []  # not a Python module: no PyInit_ symbol to export
        return list(super().get_export_symbols(ext))

    def build_extension(self, ext: Extension) -> None:
        if ext is not PRELOAD:
            super().build_extension(ext)
            return
        if not sys.platform.startswith("linux"):
            print("busbridge: the native preload library is Linux-only; not built",
                  file=sys.stderr)
            return
        try:
            out = self.get_ext_fullpath(ext.name)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            objects = self.compiler.compile(ext.sources, output_dir=self.build_temp,
                                            extra_postargs=ext.extra_compile_args,
                                            depends=ext.depends)
            self.compiler.link_shared_object(objects, out, libraries=ext.libraries,
                                             extra_postargs=ext.extra_link_args)
        except Exception as e:  # no compiler, no libc headers: the rest still installs
            print(f"busbridge: WARNING: the native preload library was not built ({e}). "
                  "busbridge works as pure Python, but `busbridge run` cannot serve native "
                  "programs (i2c-tools, C, Node); install a C compiler (gcc, libc6-dev, "
                  "linux-libc-dev) and reinstall to get it. See docs/native.md.",
                  file=sys.stderr)


ext_modules = [PRELOAD]
if os.environ.get("BUSBRIDGE_COMPILE") == "1":
    from mypyc.build import mypycify

    ext_modules += mypycify(COMPILED, opt_level="3") + NATIVE

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
