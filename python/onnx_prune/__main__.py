"""``python -m onnx_prune ARGS`` runs ``onnx-prune ARGS`` and exits with its exit code."""

from __future__ import annotations

import os
import subprocess
import sys

from onnx_prune import find_onnx_prune_bin


def _run() -> None:
    binary = find_onnx_prune_bin()
    argv = [binary, *sys.argv[1:]]
    if sys.platform == "win32":
        # Windows has no exec: run the binary as a child and pass its exit code on.
        sys.exit(subprocess.call(argv))
    os.execv(binary, argv)


if __name__ == "__main__":
    _run()
