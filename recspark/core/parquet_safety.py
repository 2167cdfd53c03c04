"""Opening Parquet files that recspark did not write, without letting them run code.

An Arrow schema can carry extension types, and pyarrow 0.14.0 to 14.0.0 rebuilt one of them,
``arrow.py_extension_type``, by unpickling bytes stored in the file: reading the schema of a
crafted file ran the file's code (CVE-2023-47248). The pinned pyarrow (14.0.2) no longer does, but
recspark may be installed beside another pyarrow, and any file under an input path, a side table
or a ``paths.root`` that someone else can write to may be crafted. So, on any pyarrow:

* :func:`disarm` (run when this module is imported, and before every check) replaces the
  pickle-based type in pyarrow's registry with a type that never unpickles its bytes;
* :func:`check_schema` refuses a schema holding any extension type, known to pyarrow or not:
  recspark reads plain columns only, so an extension type is a file it cannot read safely, and it
  says so (a :class:`~recspark.core.errors.BadInputError` naming the file, the column and the
  type) before any row is read;
* :func:`check_parquet` / :func:`check_parquet_files` read only the footers and check them.

Spark's own Parquet reader (JVM) does not unpickle anything; this guards what pyarrow opens on the
driver and in the trainer (schema checks, petastorm's feed, small tables read whole).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from recspark.core.errors import BadInputError
from recspark.core.location import Location, shown

PICKLED_TYPE = "arrow.py_extension_type"
_EXTENSION_NAME = b"ARROW:extension:name"


class RefusedPickledType(pa.ExtensionType):
    """What ``arrow.py_extension_type`` reads as once disarmed: its storage, bytes unread."""

    def __init__(self, storage_type: pa.DataType):
        super().__init__(storage_type, PICKLED_TYPE)

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: pa.DataType, serialized: bytes):
        return cls(storage_type)  # the pickle in ``serialized`` is never loaded


def disarm() -> None:
    """Register :class:`RefusedPickledType` for ``arrow.py_extension_type``, in place of
    whatever pyarrow registered.

    pyarrow before 14.0.1 unpickles that type's bytes; 14.0.1 and later do not by default, but
    do again after ``pyarrow.PyExtensionType.set_auto_load(True)`` (which anything in the process
    may call). Idempotent, and cheap enough to run before every check.
    """
    with contextlib.suppress(KeyError, pa.ArrowKeyError):  # not registered: nothing to remove
        pa.unregister_extension_type(PICKLED_TYPE)
    pa.register_extension_type(RefusedPickledType(pa.null()))


disarm()


def _extension_name(field: pa.Field) -> str | None:
    if isinstance(field.type, pa.BaseExtensionType):
        return field.type.extension_name
    # A type pyarrow does not know is read as its storage, its name kept in the field's metadata.
    if field.metadata and _EXTENSION_NAME in field.metadata:
        return field.metadata[_EXTENSION_NAME].decode("utf-8", "replace")
    return None


def _children(data_type: pa.DataType) -> list[pa.Field]:
    if isinstance(data_type, pa.BaseExtensionType):
        data_type = data_type.storage_type
    if pa.types.is_struct(data_type):
        return [data_type.field(i) for i in range(data_type.num_fields)]
    if pa.types.is_map(data_type):
        return [data_type.key_field, data_type.item_field]
    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or (pa.types.is_fixed_size_list(data_type))
    ):
        return [data_type.value_field]
    if pa.types.is_dictionary(data_type):
        return [pa.field("value", data_type.value_type)]
    return []


def extension_columns(schema: pa.Schema) -> list[tuple[str, str]]:
    """``(column path, extension type name)`` of every field of ``schema`` with an extension type,
    nested fields included (``a.b`` for field ``b`` of struct ``a``)."""
    found = []
    stack = [(field.name, field) for field in reversed(list(schema))]
    while stack:
        path, field = stack.pop()
        name = _extension_name(field)
        if name is not None:
            found.append((path, name))
            continue
        stack.extend((f"{path}.{child.name}", child) for child in reversed(_children(field.type)))
    return found


def check_schema(schema: pa.Schema, where: str) -> None:
    """Refuse a schema that holds an extension type.

    Raises
    ------
    BadInputError
        Naming ``where`` (the file), the column and the type.
    """
    found = extension_columns(schema)
    if found:
        column, name = found[0]
        raise BadInputError(
            f"{where}: column {column!r} has the Arrow extension type {name!r}, which recspark "
            "does not read (such types can carry code, CVE-2023-47248); rewrite the column as a "
            "plain type (integer, float or string) and run again"
        )


def read_schema(file: Location | str) -> pa.Schema:
    """The Arrow schema of one Parquet file, from its footer, checked by :func:`check_schema`.

    Raises
    ------
    BadInputError
        For an extension type (see :func:`check_schema`), or a file that is not Parquet.
    """
    location = Location(file) if isinstance(file, str) else file
    where = f"Parquet file {shown(str(location))}"
    disarm()
    with warnings.catch_warnings():
        # pyarrow 14 warns that it did not unpickle a type: the refusal below says more.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", FutureWarning)
        try:
            with location.open("rb") as handle:
                schema = pq.read_schema(handle)
        except pa.ArrowInvalid as error:
            raise BadInputError(f"{where} cannot be read as Parquet ({error})") from None
    check_schema(schema, where)
    return schema


def check_parquet(file: Location | str) -> None:
    """:func:`read_schema` for its check alone."""
    read_schema(file)


def check_parquet_files(files: Iterable[Location]) -> None:
    """Check the footer of every file; the first offending file's error is raised."""
    for file in files:
        check_parquet(file)


def table_files(folder: Location | str) -> list[Location]:
    """The files a Parquet reader (Spark, pyarrow's datasets, petastorm) takes from a folder:
    every file below it, but those under a name starting with ``_`` or ``.`` (``_SUCCESS``,
    Hadoop's ``.crc`` files)."""
    entries = Location(folder).listing()
    return [
        entry.location
        for entry in entries
        if not any(part.startswith(("_", ".")) for part in entry.relative.split("/"))
    ]


def check_parquet_folder(folder: Location | str) -> None:
    """:func:`check_parquet_files` over :func:`table_files`; a missing folder is left alone."""
    check_parquet_files(table_files(folder))
