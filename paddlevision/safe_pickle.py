"""Reading ``.pdparams`` and ``.pdopt`` files as data, never as code.

Both are pickles, and ``paddle.load`` unpickles them with :mod:`pickle`, which calls
whatever callable a file names: a weights file from a stranger can run any command. This
module unpickles with an allow-list instead, as ``torch.load(weights_only=True)`` does: a
file may build only what ``paddle.save`` writes for a state dict or a training state —

* plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None,
  ``collections.OrderedDict``);
* numpy arrays and scalars of numpy's built-in numeric or bool dtypes, built only the way
  numpy's own pickles build them (``_reconstruct`` then one ``__setstate__``, ``scalar``):
  never ``ndarray(...)`` itself, a view of another array, or an object array;
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

    state = None  # a class attribute: pickle makes the instance with __new__, not __init__

    def __setstate__(self, state):
        if self.state is not None:
            raise UnpicklingRefused("paddle.base.libpaddle.GeneratorState", "__setstate__ (a second time)")
        self.state = state

    def restore(self):
        from paddle.base.libpaddle import GeneratorState

        generator_state = GeneratorState.__new__(GeneratorState)
        generator_state.__setstate__(self.state)
        return generator_state


class _Array:
    """An array under construction: numpy pickles one as ``_reconstruct(ndarray, (0,), b"b")``
    followed by BUILD, which calls ``ndarray.__setstate__``. Called on an array that another
    object views, that frees memory still in use; called on a dtype, it can give a float
    dtype a sub-array shape that makes numpy read past the data. So the file never holds the
    array itself until its one BUILD is done, and dtypes are numpy's built-in ones, on which
    ``__setstate__`` does nothing."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        if self.array is not None:
            raise UnpicklingRefused("numpy.ndarray", "__setstate__ (a second time)")
        array = _multiarray._reconstruct(np.ndarray, (0,), b"b")
        array.__setstate__(state)  # numpy checks that the data fills the shape
        self.array = array


class _NDArrayName:
    """What ``numpy.ndarray`` stands for in a file: only ``_reconstruct``'s first argument.
    Called, it would make an array over another one's memory (``ndarray(shape, dtype, buffer)``)."""

    __slots__ = ()

    def __call__(self, *args):
        raise UnpicklingRefused("numpy", "ndarray")


_NDARRAY = _NDArrayName()


def _new_array(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise UnpicklingRefused("numpy._core.multiarray", "_reconstruct of a type other than numpy.ndarray")
    return _Array()


def _array_dtype(name, align=False, copy=False):
    dtype = np.dtype(name) if isinstance(name, str) else None
    if dtype is None or dtype.isbuiltin != 1 or dtype.kind not in _ARRAY_KINDS:
        raise UnpicklingRefused("numpy.dtype", repr(name))
    return dtype  # numpy's shared instance, whatever ``copy`` asks: BUILD cannot change it


def _sequence_of(kind):
    """``kind`` called on a list or tuple the file holds, never on an iterable that could
    be far larger than the file (an array) or hold views of an array (its rows)."""

    def build(items=()):
        if type(items) not in (list, tuple):
            raise UnpicklingRefused("builtins", f"{kind.__name__} of a {type(items).__name__}")
        return kind(items)

    return build


def _latin1_bytes(text, encoding):
    # How protocol 2 pickles bytes (numpy's raw data among them). Compared as written, not
    # looked up: codecs.lookup imports modules and calls registered search functions.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnpicklingRefused("_codecs.encode", repr(encoding))
    return text.encode("latin1")


_NUMPY_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy 2, numpy 1
# Containers and numbers that pickle protocols before 4 build by calling their type.
_ALLOWED = {
    ("builtins", "tuple"): _sequence_of(tuple),  # also paddle.save's tensor: (tuple, ((name, array),))
    ("builtins", "set"): _sequence_of(set),
    ("builtins", "frozenset"): _sequence_of(frozenset),
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _array_dtype,
    ("paddle.base.libpaddle", "GeneratorState"): SavedGeneratorState,
    **{(module, "_reconstruct"): _new_array for module in _NUMPY_MULTIARRAY},
    **{(module, "scalar"): _multiarray.scalar for module in _NUMPY_MULTIARRAY},
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


def _plain(obj, done):
    """``obj`` with its arrays built and tensors saved as ``(name, array)`` turned into
    their arrays. ``done`` maps what is already converted, by id: a file may refer to one
    object many times (the pickle memo), and converting each reference anew would cost
    exponentially more than the file's size."""
    if id(obj) in done:
        return done[id(obj)]
    if isinstance(obj, _Array):
        result = obj.array if obj.array is not None else np.empty(0, np.int8)
    elif isinstance(obj, dict):
        result = type(obj)((key, _plain(value, done)) for key, value in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = [_plain(value, done) for value in obj]
        tensor = type(obj) is tuple and len(items) == 2 and isinstance(items[0], str)
        result = items[1] if tensor and isinstance(items[1], np.ndarray) else type(obj)(items)
    else:
        result = obj
    done[id(obj)] = result
    return result


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
        obj = _plain(_RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load(), {})
    except UnpicklingRefused as refused:
        raise UnsafePickleError(refusal(refused.qualified_name)) from None
    except RecursionError:
        raise ValueError("nested too deeply to be a state dict") from None
    except Exception as err:  # whatever a malformed pickle makes the unpickler raise
        if isinstance(err, EOFError) or "truncated" in str(err):
            raise ValueError("truncated (the pickle ends early)") from None
        raise ValueError(f"not a paddle.save file ({type(err).__name__}: {' '.join(str(err).split())})") from None
    if isinstance(obj, dict):
        obj.pop(_NAME_TABLE, None)
    return obj
