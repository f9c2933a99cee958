"""Load the shared C++ runtime before usearch; import this module before ``usearch``.

usearch's extension (2.26) links libstdc++ statically. Its GNU-unique C++ runtime symbols then
bind process-wide, and onnxruntime (which uses the shared libstdc++) crashes with SIGSEGV while
initialising when it is imported after usearch. Loading the shared libstdc++ globally first
makes every later library use that one, whatever the import order (works without
onnxruntime too, e.g. TensorRT-only deployments). Not needed where there is no libstdc++.
"""

import contextlib
import ctypes

with contextlib.suppress(OSError):
    ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
