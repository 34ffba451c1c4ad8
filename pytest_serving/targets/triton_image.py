"""The CPU Triton image built without NGC: the ``tritonserver`` that the PyPI wheel nvidia-pytriton ships.

The wheel is auditwheel-repaired: ``tritonserver``, its python backend and the stubs find
their bundled libraries (``nvidia_pytriton.libs``, names with hashes) through RPATHs
relative to the wheel's layout. The image flattens that layout under /opt/tritonserver and
registers ``lib/`` with ldconfig instead, then fails the build if ``ldd`` finds any library
missing. The stub for the image's Python (Debian bookworm: 3.11) goes into
``backends/python``, where the python backend looks for it.

The wheel has no onnxruntime backend: only the python backend (our model.py runs ONNX
through the onnxruntime wheel) and the local response cache.
"""

from __future__ import annotations

from ..images.recipe import OfflineImage, WheelFiles

#: What ``GET /v2`` of this build reports: nvidia-pytriton 0.7.0 carries Triton 2.51.0 (r24.10).
TRITON_SERVER_VERSION = "2.51.0"
TRITON_HOME = "/opt/tritonserver"
#: Debian bookworm's Python, which the backend stub is linked against and runs model.py in.
_PYTHON = "3.11"
_WHEEL_ROOT = "pytriton/tritonserver/"
_LINKED = (
    "bin/tritonserver",
    "backends/python/libtriton_python.so",
    "backends/python/triton_python_backend_stub",
    "caches/local/libtritoncache_local.so",
)

TRITON_OFFLINE_IMAGE = OfflineImage(
    tag=f"pytest-serving/triton:{TRITON_SERVER_VERSION}-cpu",
    # The only library ldd finds missing from minbase: the wheel bundles all the others.
    apt_packages=(f"libpython{_PYTHON}",),
    # Pillow and onnxruntime as in the in-process reference, so both sides decode and infer alike.
    # numpy stays 1.x: this stub's pybind11 reads numpy 2's dtypes wrongly (BYTES inputs arrive
    # as the first byte repeated, and the stub dies).
    wheels=("numpy==1.26.4", "pillow==13.0.0", "onnxruntime==1.31.1"),
    python_version=_PYTHON,
    wheel_files=(
        WheelFiles(
            requirement="nvidia-pytriton==0.7.0",
            members=(
                (_WHEEL_ROOT + "bin/", f"{TRITON_HOME}/bin"),
                (_WHEEL_ROOT + "backends/", f"{TRITON_HOME}/backends"),
                (_WHEEL_ROOT + "caches/", f"{TRITON_HOME}/caches"),
                (
                    f"{_WHEEL_ROOT}python_backend_stubs/{_PYTHON}/triton_python_backend_stub",
                    f"{TRITON_HOME}/backends/python",
                ),
                ("nvidia_pytriton.libs/", f"{TRITON_HOME}/lib"),
            ),
        ),
    ),
    dockerfile_steps=f"""
RUN echo {TRITON_HOME}/lib > /etc/ld.so.conf.d/tritonserver.conf && ldconfig \\
 && ldd {' '.join(f'{TRITON_HOME}/{path}' for path in _LINKED)} > /tmp/ldd.txt \\
 && if grep 'not found' /tmp/ldd.txt; then exit 1; fi && rm /tmp/ldd.txt \\
 && python3 -c 'import numpy, PIL, onnxruntime'
ENV PATH={TRITON_HOME}/bin:$PATH
WORKDIR {TRITON_HOME}
CMD ["tritonserver", "--model-repository=/models"]
""",
)
