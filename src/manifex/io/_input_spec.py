"""The record of which part of an AnnData a model was trained on: :class:`InputSpec`.

The ``tl`` functions choose the input (:mod:`manifex.tl._input`) and record it on the model
(``model.input_spec_``); model files store it as the dict of :meth:`InputSpec.to_dict`
(:mod:`manifex.io._models`); :func:`manifex.tl.embed` reads it to prepare a query alike. It is
plain data (strings, arrays, dicts): the models keep it without knowing AnnData.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InputSpec"]

_ARRAY_FIELDS = ("var_names", "pca_components", "pca_mean")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(np.asarray(a), np.asarray(b))
    return bool(a == b)


@dataclass(frozen=True, eq=False)
class InputSpec(Mapping):
    """Which part of an AnnData a model was trained on, so a query can be prepared alike.

    ``source`` is ``"obsm"``, ``"layer"``, ``"X"``, ``"images"`` (an ``obsm`` key) or ``"pca"`` (a
    PCA computed by manifex from ``X``, whose loadings ``pca_components`` and gene means
    ``pca_mean`` are kept so queries are projected the same way); ``key`` the ``obsm`` key or
    layer. ``var_names`` are the genes a gene-level input was read from, ``genes`` a signature of
    their values (:func:`manifex.tl._prepcheck.gene_signature`) to check a query's preprocessing
    later. ``key_added`` and ``method`` name the ``tl`` call that fitted the model; ``extra`` holds
    further facts (e.g. the fingerprint of the reference's ``varm["PCs"]``).

    The ``tl`` functions record it on the model (``model.input_spec_``); :meth:`to_dict` /
    :meth:`from_dict` are its form in a model file. It reads like a mapping too
    (``spec["source"]``, ``dict(spec)``) and compares equal to a mapping with the same entries.

    Examples
    --------
    >>> from manifex.io import InputSpec
    >>> spec = InputSpec("obsm", "X_pca", description="obsm['X_pca']")
    >>> spec.slots(), spec["key"]
    ([('obsm', 'X_pca')], 'X_pca')
    >>> InputSpec.from_dict(spec.to_dict()) == spec
    True
    """

    source: str | None
    key: str | None = None
    var_names: np.ndarray | None = None
    pca_components: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    genes: dict[str, Any] | None = None
    key_added: str | None = None
    method: str | None = None

    # ---- the form in a model file -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every field by name (the JSON of a model file; arrays stay arrays)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputSpec:
        """The spec of a mapping written by :meth:`to_dict` (or by an older manifex: missing
        fields take their defaults, unknown entries go to ``extra``)."""
        if not isinstance(d, Mapping):
            raise TypeError(f"An input spec must be a mapping, got {type(d).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        kwargs.setdefault("source", None)
        for k in _ARRAY_FIELDS:
            if isinstance(kwargs.get(k), list | tuple):
                kwargs[k] = np.asarray(kwargs[k])
        unknown = {k: v for k, v in d.items() if k not in names}
        kwargs["extra"] = {**dict(kwargs.get("extra") or {}), **unknown}
        if kwargs.get("genes") is not None:
            kwargs["genes"] = dict(kwargs["genes"])
        return cls(**kwargs)

    @classmethod
    def coerce(cls, value: Any, *, name: str = "input_spec") -> InputSpec | None:
        """``value`` as an :class:`InputSpec` (a mapping is read by :meth:`from_dict`), or ``None``."""
        if value is None or isinstance(value, InputSpec):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise TypeError(f"`{name}` must be an InputSpec, a dict or None, got {type(value).__name__}.")

    def replace(self, **changes: Any) -> InputSpec:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    # ---- what it reads and writes -----------------------------------------------------------
    def slots(self) -> list[tuple[str, str]]:
        """The AnnData entries this input is read from (for the ``key_added`` check)."""
        return [("obsm", self.key)] if self.source in ("obsm", "images") and self.key else []

    def to_uns(self) -> dict[str, Any]:
        """What ``uns[key]["input"]`` records."""
        return {
            "source": self.source if self.source is not None else "",
            "key": self.key if self.key is not None else "",
            "description": self.description,
        }

    # ---- read access as a mapping, equality -------------------------------------------------
    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, Mapping) and not isinstance(other, InputSpec):
            other = InputSpec.from_dict(other)
        if not isinstance(other, InputSpec):
            return NotImplemented
        return all(_same(getattr(self, f), getattr(other, f)) for f in self.__dataclass_fields__)

    __hash__ = None  # type: ignore[assignment]
