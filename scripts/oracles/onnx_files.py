"""Shared by the cross-check scripts: the .onnx files named on the command line or under its directories."""
import os


def onnx_files(targets):
    """Every `.onnx` file among `targets` (files, or directories searched recursively), sorted."""
    files = []
    for t in targets:
        if os.path.isdir(t):
            for root, _, names in os.walk(t):
                files += [os.path.join(root, n) for n in names if n.endswith(".onnx")]
        else:
            files.append(t)
    return sorted(files)
