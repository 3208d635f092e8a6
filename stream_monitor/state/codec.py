"""State as compact bytes: msgpack, with runs of floats or ints packed as raw arrays.

A detector's ``state_dict()`` is plain data (dicts, lists, numbers, strings);
its windows and reference samples are long lists of floats. msgpack spends 9
bytes per float and JSON about 19; a run packed as little-endian float64 takes
8, and exactly (a restored detector must give the same future detections, so
nothing is rounded). Decoding gives back the same Python types ``state_dict``
produced: lists of floats and ints, never numpy arrays.

Decoding uses msgpack's safe subset (no code runs from the bytes, unlike
pickle): whoever can write the changelog topic can corrupt the state, never
run code in the monitor.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["StateDecodeError", "decode", "encode"]

#: msgpack extension codes
_FLOATS = 1
_INTS = 2
#: shorter lists stay plain msgpack (the ext header would cost more than it saves)
_PACK_MIN = 8
#: types msgpack packs as they are: a list of only these needs no walk in Python
#: (the join's 100k remembered ids took 60 ms to walk, 7 ms to pack)
_PLAIN = frozenset((str, bytes, bool, int, float, type(None)))


#: integer runs by width: (extension code, little-endian dtype), narrowest first
_INT_TYPES = ((3, "<i1"), (4, "<i2"), (5, "<i4"), (_INTS, "<i8"))
_INT_DTYPES = dict(_INT_TYPES)


class StateDecodeError(ValueError):
    """Bytes that are not a state this version can read."""


def _pack(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _pack(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) >= _PACK_MIN:
            first = type(value[0])
            if first is float and all(type(item) is float for item in value):
                return msgpack.ExtType(_FLOATS, np.asarray(value, dtype="<f8").tobytes())
            if first is int and all(type(item) is int for item in value):
                array = np.asarray(value)
                if array.dtype == np.int64:
                    # the narrowest type that holds them (category codes fit in a byte)
                    low, high = int(array.min()), int(array.max())
                    for code, dtype in _INT_TYPES:
                        info = np.iinfo(dtype)
                        if info.min <= low and high <= info.max:
                            return msgpack.ExtType(code, array.astype(dtype).tobytes())
        if all(type(item) in _PLAIN for item in value):
            return value
        return [_pack(item) for item in value]
    if isinstance(value, np.ndarray):
        return _pack(value.tolist())
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _ext(code: int, data: bytes) -> Any:
    if code == _FLOATS:
        return np.frombuffer(data, dtype="<f8").tolist()
    dtype = _INT_DTYPES.get(code)
    if dtype is not None:
        return np.frombuffer(data, dtype=dtype).tolist()
    raise StateDecodeError(f"unknown extension type {code} in a state record")


def encode(state: Any) -> bytes:
    """Plain data (as ``state_dict()`` returns) to bytes; :func:`decode` inverts it exactly."""
    return msgpack.packb(_pack(state), use_bin_type=True)


def decode(data: bytes) -> Any:
    """The plain data :func:`encode` was given; raises :class:`StateDecodeError` on bad bytes."""
    try:
        return msgpack.unpackb(data, ext_hook=_ext, raw=False, strict_map_key=False)
    except StateDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for bad bytes
        raise StateDecodeError(f"not a state record: {exc}") from None
