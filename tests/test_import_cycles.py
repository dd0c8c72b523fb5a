"""Every af2 module imports on its own: no import cycle that only works in one import order."""

import json
import subprocess
import sys

# One fresh interpreter; before each module every af2 module is dropped from sys.modules, so each
# import starts from nothing of af2 (third-party modules such as torch stay loaded: they are slow
# to import and cannot hold an af2 cycle).
_SCRIPT = r"""
import importlib, json, pkgutil, sys
import af2

names = sorted(m.name for m in pkgutil.walk_packages(af2.__path__, "af2.") if not m.name.endswith("__main__"))
failures = []
for name in names:
    for key in [k for k in sys.modules if k == "af2" or k.startswith("af2.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "af2":
            failures.append(f"{name}: {exc}")
    except ImportError as exc:
        failures.append(f"{name}: {exc}")
print(json.dumps({"modules": names, "failures": failures}))
"""


def test_every_module_imports_alone():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) > 80 and "af2.checkpoint.folder" in result["modules"]
    assert result["failures"] == []
