"""The old name of `mega2bart.builder`, kept for one release.

The package was renamed because many tools treat a folder called `build/` as build output and hide it
(pytest's default `norecursedirs`, editors' ignore lists, structure viewers). `import mega2bart.build` and
`from mega2bart.build.loading import ...` still work and give the very same modules as `mega2bart.builder`
(one class `BuildError`, not two), with a DeprecationWarning.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

_NEW = "mega2bart.builder"


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves `mega2bart.build.X` to the already importable `mega2bart.builder.X`."""

    def find_spec(self, fullname, path, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(_NEW + spec.name[len(__name__) :])

    def exec_module(self, module):
        pass


warnings.warn(
    "mega2bart.build was renamed to mega2bart.builder; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
sys.meta_path.insert(0, _Alias())
sys.modules[__name__] = importlib.import_module(_NEW)
