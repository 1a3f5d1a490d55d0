"""The packed forest's walk as machine code that a process loads without importing numba.

numba compiles the walk once per machine (as a C function, `cfunc`), and its object code is
kept next to bentos/forest.py (`__pycache__/forest-walk-KEY.o`, with a `.json` that names the
function and the symbols it refers to). A later process loads that file with llvmlite's MCJIT,
the loader numba itself uses, and calls the function through ctypes. Why not numba's own cache:
importing numba and rebuilding its compiler's registries to load one cached function took
0.4-0.6 s of every process's start, a job's and each server worker's (BENCHMARKS.md, "Batch");
llvmlite alone takes about 0.05 s. And numba loads a cache only from a folder it could write to,
which the pods' read-only root is not; this file is only read. ctypes releases the GIL during
the call, so the batch job's threads walk in parallel as before.

KEY covers the walk's source (forest.py and this file), numba's and llvmlite's versions and the
CPU (its name and features): code compiled for another CPU may use instructions this one lacks,
so any difference compiles anew, as numba's cache does. A file whose sha256 is not the one its
`.json` records is not loaded (a write cut short). Where the folder cannot be written (a pod's
read-only root without the image's file) the process compiles its own every time it starts.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# The C function's arguments: the forest's (nodes, thresholds: the same buffer as float32, their
# length, roots and their count, values and their shape, the feature bits), then each call's
# (rows, their count and width, the doubled rows' buffer, the output).
_P, _I = ctypes.c_void_p, ctypes.c_int64
_ARGS = (_P, _P, _I, _P, _I, _P, _I, _I, _I, _P, _I, _I, _P, _P)
_CFUNC = ctypes.CFUNCTYPE(None, *_ARGS)  # CFUNCTYPE, not PYFUNCTYPE: the GIL is released
_ALIVE: list[Any] = []  # the engines and compiled functions whose code the callables run

Walk = Callable[..., None]


def load(walk_into: Callable[..., None], folder: Path, lanes: int) -> Walk:
    """`walk_into` (bentos.forest._walk_into) as a C function: from its object file in `folder`
    when there is one for this machine, else compiled now and its object file written there
    (when the folder can be written)."""
    stem = None
    try:
        stem = folder / f"forest-walk-{_key(walk_into)}"
        return _from_object(stem)
    except (OSError, ValueError, KeyError, RuntimeError, metadata.PackageNotFoundError):
        pass  # none yet, another machine's, cut short, or no key here: compile
    address, saved = _compile(walk_into, lanes)
    if saved is not None and stem is not None:
        _save(stem, *saved)
    return _CFUNC(address)


def _key(walk_into: Callable[..., None]) -> str:
    import llvmlite
    import llvmlite.binding as llvm

    h = hashlib.sha256()
    for source in (walk_into.__code__.co_filename, __file__):
        h.update(Path(source).read_bytes())
    h.update(f"{metadata.version('numba')} {llvmlite.__version__}".encode())
    h.update(f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()}".encode())
    return h.hexdigest()[:16]


def _from_object(stem: Path) -> Walk:
    meta = json.loads(stem.with_suffix(".json").read_text())
    code = stem.with_suffix(".o").read_bytes()
    if hashlib.sha256(code).hexdigest() != meta["sha256"]:
        raise ValueError(f"{stem}.o is not the file its .json describes")
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    # The symbols numba's wrapper refers to on its error paths (reporting an exception under
    # the GIL, an array's destructor): this walk raises nothing and owns no array, so they are
    # never called. Those this process lacks (numba's helpers: numba is not loaded) resolve to
    # abort(), as an unresolved symbol would otherwise end the process when the code is linked.
    abort = ctypes.cast(ctypes.CDLL(None).abort, ctypes.c_void_p).value
    for name in meta["undefined"]:
        if not llvm.address_of_symbol(name):
            llvm.add_symbol(name, abort)
    machine = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
    engine.add_object_file(llvm.ObjectFileRef.from_data(code))
    engine.finalize_object()
    address = engine.get_function_address(meta["name"])
    if not address:
        raise RuntimeError(f"{stem}.o has no function {meta['name']}")
    _ALIVE.append(engine)
    return _CFUNC(address)


def _compile(walk_into: Callable[..., None], lanes: int) -> tuple[int, tuple | None]:
    """The walk compiled by numba in this process: its address, and (object code, function
    name, undefined symbols) to keep, or None when numba's library cannot give them."""
    import numpy as np
    from numba import carray, cfunc, njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def stack(typingctx, dtype):  # `lanes` values on the C stack: no allocation, no aliasing
        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=lanes)

        return types.CPointer(dtype.dtype)(dtype), codegen

    core = njit(nogil=True, inline="always")(walk_into)
    i64, f32p = types.int64, types.CPointer(types.float32)
    sig = types.void(
        *(types.CPointer(types.int32), f32p, i64, types.CPointer(types.int64), i64),
        *(types.CPointer(types.float64), i64, i64, i64, f32p, i64, i64, f32p),
        types.CPointer(types.float64),
    )

    @cfunc(sig, nogil=True, error_model="numpy")
    def walk(nodes, thresholds, n_nodes, roots, n_trees, values, n_values, n_classes, bits,
             x, n, n_features, xd, out):  # fmt: skip
        core(
            carray(nodes, (n_nodes,)),
            carray(thresholds, (n_nodes,)),
            carray(roots, (n_trees,)),
            carray(values, (n_values, n_classes)),
            carray(x, (n, n_features)),
            bits,
            carray(xd, (2 * n * n_features,)),
            carray(out, (n, n_classes)),
            carray(stack(np.uint64), (lanes,)),
            carray(stack(np.int64), (lanes,)),
            carray(stack(np.uint64), (lanes,)),
        )

    _ALIVE.append(walk)
    try:
        library = walk._library
        code = library.serialize_using_object_code()[2][0]
        module = library._final_module
        undefined = [
            v.name
            for v in (*module.functions, *module.global_variables)
            if v.is_declaration and not v.name.startswith("llvm.")
        ]
    except (AttributeError, IndexError, TypeError):  # another numba's internals: keep nothing
        return walk.address, None
    return walk.address, (code, walk.native_name, undefined)


def _save(stem: Path, code: bytes, name: str, undefined: list[str]) -> None:
    """Both files, each written whole under a temporary name and renamed into place, so that
    a process starting beside this one reads all of a file or none of it."""
    meta = {"name": name, "undefined": undefined, "sha256": hashlib.sha256(code).hexdigest()}
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".o", code), (".json", json.dumps(meta).encode())):
            fd, tmp = tempfile.mkstemp(dir=stem.parent, prefix=".walk-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, stem.with_suffix(suffix))
            finally:
                Path(tmp).unlink(missing_ok=True)
    except OSError:
        pass  # a read-only folder: this process compiled its own, the next one will too
