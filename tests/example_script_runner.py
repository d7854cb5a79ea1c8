"""Run a script, unchanged, where mega2bart cannot be imported: transformers' example scripts (test_example_scripts.py),
the fine-tuning worker (test_remote_code.py); `mega_tiny.run_without_mega2bart` starts it.

    python -I -S example_script_runner.py REPORT.json SITE_PACKAGES PACKAGE_DIR SCRIPT.py [SCRIPT ARGS...]

-I -S: no script folder, no PYTHONPATH, no site-packages (so no editable-install hook) on sys.path; SITE_PACKAGES
(os.pathsep-separated) are then added (torch, transformers, datasets, evaluate) and a meta-path finder refuses
"mega2bart" wherever it is installed. Then SCRIPT runs as `python SCRIPT.py ARGS` would run it: its folder first
on sys.path (run_qa.py imports utils_qa and trainer_qa from there), sys.argv[0] the script, `__main__`. REPORT
gets what the process proved: the error `import mega2bart` raised, and the modules loaded from mega2bart or from
PACKAGE_DIR by the end (both must be empty).
"""

import atexit
import importlib.abc
import json
import os
import runpy
import sys

REPORT, SITE_PACKAGES, PACKAGE_DIR, SCRIPT = sys.argv[1:5]
sys.path.extend(SITE_PACKAGES.split(os.pathsep))


class _RefuseMega2bart(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mega2bart" or name.startswith("mega2bart."):
            raise ModuleNotFoundError(f"No module named {name!r} (refused in this process)", name=name)
        return None


sys.meta_path.insert(0, _RefuseMega2bart())
try:
    import mega2bart  # noqa: F401
except ImportError as exc:
    IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    IMPORT_ERROR = None


@atexit.register
def _report():
    loaded = {
        "import_error": IMPORT_ERROR,
        "mega2bart_modules": sorted(name for name in sys.modules if name.split(".")[0] == "mega2bart"),
        "modules_from_the_package_folder": sorted(
            name
            for name, module in list(sys.modules.items())
            if (getattr(module, "__file__", None) or "").startswith(PACKAGE_DIR)
        ),
        "mega_classes": sorted(
            f"{module.__name__}"
            for name, module in list(sys.modules.items())
            if name.startswith("transformers_modules.") and name.endswith("modeling_mega")
        ),
    }
    with open(REPORT, "w") as handle:
        json.dump(loaded, handle)


sys.path.insert(0, os.path.dirname(os.path.abspath(SCRIPT)))
sys.argv = [SCRIPT, *sys.argv[5:]]
runpy.run_path(SCRIPT, run_name="__main__")
