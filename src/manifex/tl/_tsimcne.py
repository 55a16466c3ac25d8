from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData

from .._anndata import check_adata, check_flags
from ..io import InputSpec
from ..models._images import BackedImages, check_images, on_disk
from ..models.tsimcne import TSimCNE
from ._docs import FIT_DOCS, doc_params, model_params
from ._fit import MIN_CELLS, check_n_cells, fit_embedding

_STAGES = ("pretrain", "linear", "finetune")
#: Fewest images t-SimCNE trains on (two views of each form its pairs; no kNN graph).
IMAGE_MIN_CELLS = 2


def _stage_uns(model: TSimCNE) -> dict[str, Any]:
    h = model.history_
    return {
        "stages": {s: h[s] for s in _STAGES if s in h},
        "n_epochs": np.asarray(model.epochs),
        "finetune_lr_factor": model.effective_finetune_lr_factor,
        "batch_size": h["batch_size"],
        "steps_per_epoch": h["steps_per_epoch"],
        "kind": model.kind_,
        "backbone": type(model.net_.backbone).__name__,
        "feature_dim": int(model.feature_dim_),
    }


class _Outputs:
    """What :func:`tsimcne` writes besides the map: the features with ``add_features``, the
    per-stage record, and for images their throughput."""

    def __init__(self, add_features: bool, images: bool) -> None:
        self.add_features, self.images = add_features, images

    def writes(self, k: str) -> list[tuple[str, str]]:
        return [("obsm", f"X_{k}_features")] if self.add_features else []

    def collect(self, m: TSimCNE, k: str) -> tuple[dict, dict, dict]:
        obsm = {f"X_{k}_features": m.features_} if self.add_features else {}
        uns = _stage_uns(m)
        if self.images:
            h = m.history_
            steps = sum(h[s]["n_steps"] for s in _STAGES if s in h)
            uns["images_per_second"] = float(steps * h["batch_size"] / max(h["seconds"], 1e-9))
        return obsm, {}, uns


def _image_input(
    adata: AnnData, model: TSimCNE, image_key: str | None, images: Any, use_rep: Any, layer: Any
) -> tuple[Any, None, InputSpec]:
    """The images to train on (``obsm[image_key]`` or ``images``), checked before any work: in
    memory, or on disk (an h5py / zarr array, a memmap) checked in one pass over chunks."""
    check_adata(adata, need_vars=False)  # images live in obsm: X may have no columns
    check_n_cells(adata, model, minimum=IMAGE_MIN_CELLS, neighbors=False)
    if image_key is not None and images is not None:
        raise ValueError("Pass either `image_key` or `images`, not both.")
    if use_rep is not None or layer is not None:
        raise ValueError("`use_rep` / `layer` select expression input; they cannot be combined with images.")
    if image_key is not None:
        if not isinstance(image_key, str):
            raise TypeError(f"`image_key` must be a string, got {type(image_key).__name__}.")
        if image_key not in adata.obsm:
            raise KeyError(
                f"`image_key`={image_key!r} is not in adata.obsm (keys: {list(adata.obsm.keys())})."
            )
        imgs = adata.obsm[image_key]
        source = f"obsm[{image_key!r}]"
    else:
        imgs = images
        source = "images argument"
    stays_on_disk = on_disk(imgs)
    if hasattr(imgs, "to_numpy"):
        imgs = imgs.to_numpy()
    if not stays_on_disk:
        imgs = np.asarray(imgs)
    shape = tuple(imgs.shape)
    if len(shape) not in (3, 4):
        raise ValueError(
            f"The images ({source}) must have shape (n_obs, H, W) or (n_obs, H, W, C), got shape {shape}."
        )
    if shape[0] != adata.n_obs:
        raise ValueError(f"There are {shape[0]} images ({source}) but adata has {adata.n_obs} observations.")
    if stays_on_disk:  # checked in one pass over chunks, then streamed per minibatch
        imgs = BackedImages(imgs, name=f"images ({source})", pixel_range=model.pixel_range)
    else:
        check_images(imgs, name=f"images ({source})")  # dtype, size and finiteness; no copy
    return imgs, None, InputSpec("images", image_key, description=source)


@doc_params(
    **FIT_DOCS,
    doc_model_augment=model_params(TSimCNE, "augment"),
)
def tsimcne(
    adata: AnnData,
    *,
    image_key: str | None = None,
    images: np.ndarray | None = None,
    use_rep: str | None = None,
    layer: str | None = None,
    n_components: int = 2,
    preset: str = "default",
    n_epochs: tuple[int, int, int] | None = None,
    batch_size: int | None = None,
    backbone: Any = "auto",
    augment: Any = "auto",
    add_features: bool = False,
    device: str = "auto",
    random_state: int = 0,
    progress: bool = True,
    key_added: str | None = None,
    return_model: bool = False,
    copy: bool = False,
    **model_kwargs: Any,
) -> AnnData | TSimCNE | tuple[AnnData, TSimCNE] | None:
    """Contrastive 2-d map with t-SimCNE (Böhm, Berens & Kobak, ICLR 2023).

    Trains :class:`manifex.models.TSimCNE` and stores the map where scanpy looks for embeddings,
    so ``sc.pl.embedding(adata, basis="tsimcne")`` works. Neighbours in the map are images that
    the network sees as the same kind of object under crops, flips and colour changes, not
    merely images with similar pixels.

    With ``image_key`` (or ``images``) it embeds images; otherwise it runs the **expression
    variant** on ``use_rep`` / ``layer`` / ``X`` (chosen like :func:`manifex.tl.dlme`): an MLP
    backbone trained with the expression augmentations (kNN-mix, feature dropout, noise) in
    place of image augmentations. The variant is not part of the original paper.

    Parameters
    ----------
    adata
        Annotated data matrix; one observation per image or cell.
    image_key
        ``obsm`` key of the images, shape ``(n_obs, H, W)`` or ``(n_obs, H, W, C)``, uint8 or
        float (see :func:`manifex.datasets.image_anndata`). At least 8×8 px.
    images
        The images as an array instead of an ``obsm`` key (they are not stored in ``adata``).
        An on-disk array (an h5py dataset, zarr array or numpy memmap, e.g.
        ``h5py.File(path)["obsm/image"]``) is not loaded: it is checked in one pass over
        chunks and read per minibatch, so images larger than memory can be mapped.
    use_rep, layer
        Input of the expression variant (ignored for images).
    n_components
        Dimension of the map.
    preset, n_epochs, batch_size
        Training budget: ``preset`` ``"quick"`` (20, 5, 10) epochs, ``"cpu"`` and ``"default"``
        (400, 25, 75) or ``"paper"`` (1000, 50, 450); ``n_epochs=(s1, s2, s3)`` overrides it.
        ``batch_size`` defaults to the preset's (256 for ``"quick"``, else 512).
    backbone
        ``"auto"`` (small ResNet below 32 px, CIFAR ResNet-18 from 32 px, MLP for expression),
        ``"small"``, ``"resnet18"`` or a :class:`torch.nn.Module`.
    {doc_model_augment}
    add_features
        Also store the backbone features (512-d for ResNet-18) in ``obsm["X_<key>_features"]``.
    {doc_device}
    {doc_random_state}
    {doc_progress}
    key_added
        Results go to ``obsm["X_<key_added>"]`` and ``uns[key_added]``; default ``"tsimcne"``.
    return_model
        Also return the fitted model (``model.transform(new_images)``, ``model.save(path)``).
    {doc_copy_adata}
    **model_kwargs
        Further :class:`manifex.models.TSimCNE` parameters (``lr``, ``checkpoint``, ...).

    Returns
    -------
    {doc_returns_fit}

    ``adata.obsm["X_tsimcne"]``
        The map, ``(n_obs, n_components)``.
    ``adata.obsm["X_tsimcne_features"]``
        Backbone features, with ``add_features=True``.
    ``adata.uns["tsimcne"]``
        ``params``, ``input``, ``loss`` per epoch over all stages, per-stage history under
        ``stages`` (loss, learning rate, steps, seconds, images/s, seconds spent augmenting),
        ``device`` and ``seconds``.

    Examples
    --------
    >>> import manifex as mx
    >>> from sklearn.datasets import load_digits
    >>> d = load_digits()
    >>> adata = mx.datasets.image_anndata((d.images * 255 / 16).astype("uint8"), labels=d.target)
    >>> mx.tl.tsimcne(adata, image_key="image", n_epochs=(2, 1, 1), progress=False)
    >>> adata.obsm["X_tsimcne"].shape
    (1797, 2)
    """
    model = TSimCNE(
        n_components=n_components,
        preset=preset,
        n_epochs=n_epochs,
        batch_size=batch_size,
        backbone=backbone,
        augment=augment,
        device=device,
        random_state=random_state,
        progress=progress,
        **model_kwargs,
    )
    check_flags(add_features=add_features)
    is_images = image_key is not None or images is not None
    given = _image_input(adata, model, image_key, images, use_rep, layer) if is_images else None
    out = _Outputs(add_features, is_images)
    return fit_embedding(
        adata,
        model,
        method="tsimcne",
        use_rep=use_rep,
        layer=layer,
        key_added=key_added,
        random_state=random_state,
        return_model=return_model,
        copy=copy,
        min_cells=IMAGE_MIN_CELLS if is_images else MIN_CELLS,
        collect=out.collect,
        extra_writes=out.writes,
        given_input=given,
    )
