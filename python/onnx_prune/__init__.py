"""onnx-prune: prune ONNX models and check them through tract.

The wheel carries the ``onnx-prune`` binary; this package only finds it, so that
``python -m onnx_prune`` runs the same program as the ``onnx-prune`` command.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

__all__ = ["find_onnx_prune_bin"]

_EXE = "onnx-prune" + (sysconfig.get_config_var("EXE") or "")


def find_onnx_prune_bin() -> str:
    """Return the path of the ``onnx-prune`` binary installed with this package.

    Looks where pip puts scripts for this interpreter (the environment's own scheme, then the
    user scheme for ``pip install --user``), then on ``PATH``.
    """
    candidates = [sysconfig.get_path("scripts")]
    user_scheme = {"nt": "nt_user", "posix": "posix_user"}.get(os.name)
    if sys.platform == "darwin" and sys._framework:  # type: ignore[attr-defined]
        user_scheme = "osx_framework_user"
    if user_scheme is not None:
        candidates.append(sysconfig.get_path("scripts", scheme=user_scheme))
    for directory in candidates:
        path = os.path.join(directory, _EXE)
        if os.path.isfile(path):
            return path
    found = shutil.which(_EXE)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"{_EXE} not found in {', '.join(candidates)} or on PATH: reinstall the onnx-prune wheel"
    )
