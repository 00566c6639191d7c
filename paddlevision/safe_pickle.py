"""Reading ``.pdparams`` and ``.pdopt`` files as data, never as code.

Both are pickles, and ``paddle.load`` unpickles them with :mod:`pickle`, which calls
whatever callable a file names: a weights file from a stranger can run any command. This
module unpickles with an allow-list instead, as ``torch.load(weights_only=True)`` does: a
file may build only what ``paddle.save`` writes for a state dict or a training state —

* plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None,
  ``collections.OrderedDict``);
* numpy arrays and scalars of numeric or bool dtype (``numpy``'s array reconstructor,
  ``ndarray``, ``dtype``, ``scalar``; object arrays are refused);
* a Paddle tensor, which ``paddle.save`` writes as the tuple ``(name, array)``;
* Paddle's random generator state (``GeneratorState``), kept as its saved numbers in a
  :class:`SavedGeneratorState` rather than built by Paddle.

Anything else — ``os.system``, ``builtins.eval``, ``subprocess``, numpy functions other
than the array reconstructors — raises :class:`UnsafePickleError` naming the refused
global, before anything it names is imported or called.

:func:`load` returns what ``paddle.load(path, return_numpy=True)`` returns for such a
file: tensors as numpy arrays, without Paddle's ``StructuredToParameterName@@`` table.
"""

import _compat_pickle
import codecs
import collections
import io
import pickle

import numpy as np

try:
    from numpy._core import multiarray as _multiarray  # numpy 2
except ImportError:
    from numpy.core import multiarray as _multiarray

__all__ = ["SavedGeneratorState", "UnpicklingRefused", "UnsafePickleError", "load", "refusal"]

# Paddle's own key in a saved state dict: parameter names of the saving process.
_NAME_TABLE = "StructuredToParameterName@@"
_ARRAY_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


class UnsafePickleError(ValueError):
    """A weights or checkpoint file that asks for something beyond plain data."""


class UnpicklingRefused(pickle.UnpicklingError):
    """Raised inside the unpickler for a global outside the allow-list."""

    def __init__(self, module, name):
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class SavedGeneratorState:
    """The numbers of a pickled ``paddle.base.libpaddle.GeneratorState``; :meth:`restore`
    builds the real one, as unpickling it would have."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def restore(self):
        from paddle.base.libpaddle import GeneratorState

        generator_state = GeneratorState.__new__(GeneratorState)
        generator_state.__setstate__(self.state)
        return generator_state


def _latin1_bytes(text, encoding):
    # How protocol 2 pickles bytes (numpy's raw data among them).
    if codecs.lookup(encoding).name != "iso8859-1":
        raise UnpicklingRefused("_codecs.encode", repr(encoding))
    return text.encode("latin1")


def _array_dtype(*args):
    dtype = np.dtype(*args)
    if dtype.kind not in _ARRAY_KINDS:
        raise UnpicklingRefused("numpy.dtype", repr(dtype.str))
    return dtype


_NUMPY_RECONSTRUCT = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy 2, numpy 1
# Containers and numbers that pickle protocols before 4 build by calling their type.
_ALLOWED = {
    ("builtins", "tuple"): tuple,  # also paddle.save's reduction of a tensor: (tuple, ((name, array),))
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _array_dtype,
    ("paddle.base.libpaddle", "GeneratorState"): SavedGeneratorState,
    **{(module, "_reconstruct"): _multiarray._reconstruct for module in _NUMPY_RECONSTRUCT},
    **{(module, "scalar"): _multiarray.scalar for module in _NUMPY_RECONSTRUCT},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Python 2's names (protocols 0-2), as pickle's own find_class maps them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnpicklingRefused(module, name) from None


def _plain(obj):
    """Tensors saved as ``(name, array)`` become their arrays; every array and numpy
    scalar is checked to hold numbers, not objects."""
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], np.ndarray):
        return _plain(obj[1])
    if isinstance(obj, (np.ndarray, np.generic)):
        if obj.dtype.kind not in _ARRAY_KINDS:
            raise UnpicklingRefused("numpy.dtype", repr(obj.dtype.str))
        return obj
    if isinstance(obj, dict):
        return type(obj)((key, _plain(value)) for key, value in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return type(obj)(_plain(value) for value in obj)
    return obj


def refusal(qualified_name):
    """The reason given for a file that names ``qualified_name``."""
    return (f"it asks to run {qualified_name} while loading: refused, as weights and checkpoints may hold only "
            "arrays, numbers, strings and containers")


def load(path):
    """The object a ``paddle.save`` file holds, read with the allow-list above.

    Raises :class:`UnsafePickleError` for a refused global, ``ValueError`` for a file that
    is not a complete pickle of plain data, and ``OSError`` for one that cannot be opened;
    the messages say what is wrong, the caller names the file.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        obj = _plain(_RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load())
    except UnpicklingRefused as refused:
        raise UnsafePickleError(refusal(refused.qualified_name)) from None
    except RecursionError:
        raise ValueError("nested too deeply to be a state dict") from None
    except Exception as err:  # whatever a malformed pickle makes the unpickler raise
        if isinstance(err, EOFError) or "truncated" in str(err):
            raise ValueError("truncated (the pickle ends early)") from None
        raise ValueError(f"not a paddle.save file ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict):
        obj.pop(_NAME_TABLE, None)
    return obj
