# The cffi-built module (native/build_native.py). cffi objects are untyped;
# imagestore.hashing is the typed face of this module.
from typing import Any

ffi: Any
lib: Any
