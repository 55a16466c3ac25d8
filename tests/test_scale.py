"""Atlas-scale paths on small data: training from a backed .h5ad without loading it, and the kNN
record a tl function writes."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import manifex as mx
from manifex.train import _data as _backed


def _spy_reads(monkeypatch, cls) -> list[int]:
    """Record the number of rows of every ``cls.read`` call."""
    reads: list[int] = []
    orig = cls.read

    def spy(self, rows):
        reads.append(len(rows))
        return orig(self, rows)

    monkeypatch.setattr(cls, "read", spy)
    return reads


def _clusters(n: int = 1200, d: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(4, d))
    labels = rng.integers(0, 4, n)
    x = np.maximum(centers[labels] + rng.normal(size=(n, d)), 0).astype(np.float32)
    x[x < 1.0] = 0.0
    return x, labels


@pytest.fixture
def backed_file(tmp_path):
    x, labels = _clusters()
    a = ad.AnnData(X=sp.csr_matrix(x))
    a.var_names = [f"g{i}" for i in range(x.shape[1])]
    a.obs["label"] = labels.astype(str)
    a.write_h5ad(tmp_path / "a.h5ad")
    return tmp_path / "a.h5ad", x, labels


def test_backed_training_reads_rows_in_chunks_and_matches_structure(backed_file, monkeypatch):
    path, x, labels = backed_file
    monkeypatch.setattr(_backed, "CHUNK_ROWS", 200)
    monkeypatch.setattr(_backed, "PCA_CHUNK_ROWS", 200)
    reads = _spy_reads(monkeypatch, _backed.BackedMatrix)
    b = ad.read_h5ad(path, backed="r")
    m = mx.models.DLME(n_steps=80, batch_size=100, progress=False, device="cpu")
    m.fit(b.X, feature_names=b.var_names)
    # never the whole matrix at once: passes read chunks, steps read a batch and its neighbours
    assert max(reads) <= 200
    assert m.knn_info_["space"] == "incremental PCA"
    # the statistics of the one pass equal those of the matrix in memory
    np.testing.assert_allclose(m.feature_mean_, x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.feature_std_, x.std(0), rtol=1e-4, atol=1e-5)
    assert mx.metrics.knn_accuracy(m.embedding_, labels) > 0.95
    # a backed query transforms like the same rows in memory
    np.testing.assert_allclose(m.transform(b.X), m.transform(x), rtol=1e-5, atol=1e-5)


def test_backed_training_of_n2d_and_tsimcne(backed_file):
    path, x, labels = backed_file
    b = ad.read_h5ad(path, backed="r")
    n = mx.models.N2D(n_clusters=4, n_steps=60, map_2d=False, progress=False, device="cpu").fit(b.X)
    assert mx.metrics.clustering_accuracy(labels, n.labels_) > 0.9
    t = mx.models.TSimCNE(n_epochs=(2, 1, 1), batch_size=100, progress=False, device="cpu").fit(b.X)
    assert t.embedding_.shape == (x.shape[0], 2) and np.isfinite(t.embedding_).all()


def test_backed_matrix_refuses_non_finite_values(tmp_path):
    x, _ = _clusters(300, 60)
    x[5, 3] = np.nan
    ad.AnnData(X=sp.csr_matrix(x)).write_h5ad(tmp_path / "nan.h5ad")
    b = ad.read_h5ad(tmp_path / "nan.h5ad", backed="r")
    with pytest.raises(ValueError, match="NaN or infinite"):
        mx.models.DLME(n_steps=5, progress=False).fit(b.X)


def test_backed_query_in_another_gene_order_is_refused(backed_file):
    path, x, _ = backed_file
    b = ad.read_h5ad(path, backed="r")
    m = mx.models.DLME(n_steps=10, progress=False, device="cpu").fit(x, feature_names=b.var_names)
    with pytest.raises(ValueError, match="training order"):
        m.transform(b.X, feature_names=np.asarray(b.var_names)[::-1])


def test_incremental_pca_matches_pca_subspace(backed_file):
    path, x, _ = backed_file
    b = ad.read_h5ad(path, backed="r")
    rep = _backed.incremental_pca(_backed.BackedMatrix(b.X), 10, chunk_rows=300)
    from sklearn.decomposition import PCA

    ref = PCA(10).fit_transform(x)
    # the same subspace: each PCA axis is explained by the incremental coordinates
    coef, *_ = np.linalg.lstsq(rep, ref - ref.mean(0), rcond=None)
    resid = (ref - ref.mean(0)) - rep @ coef
    assert (resid**2).sum() / ((ref - ref.mean(0)) ** 2).sum() < 0.05


def test_tl_records_the_knn_graph_in_uns():
    x, _ = _clusters(400, 20)
    a = ad.AnnData(X=x)
    a.obsm["X_pca"] = x
    mx.tl.dlme(a, n_steps=20, progress=False, device="cpu")
    knn = a.uns["dlme"]["knn"]
    assert knn["method"] == "exact" and knn["n_neighbors"] == 15
    m = mx.tl.dlme(a, n_steps=20, progress=False, device="cpu", knn_method="pynndescent", return_model=True)
    assert 0.9 <= a.uns["dlme"]["knn"]["recall"] <= 1.0
    assert m.knn_info_["method"] == "pynndescent"


# ---- images on disk ---------------------------------------------------------------------------
def _digit_images(n: int = 300):
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.kron(d.images[:n], np.ones((2, 2))) * (255 / 16)  # 16 × 16 px, 0–255 as floats
    return imgs.astype(np.float32), d.target[:n]


def _on_disk(tmp_path, imgs, store: str):
    if store == "memmap":
        np.save(tmp_path / "img.npy", imgs)
        return np.load(tmp_path / "img.npy", mmap_mode="r"), None
    if store == "zarr":
        import zarr

        z = zarr.open_array(
            tmp_path / "img.zarr", mode="w", shape=imgs.shape, dtype=imgs.dtype, chunks=(64, *imgs.shape[1:])
        )
        z[:] = imgs
        return z, None
    import h5py

    with h5py.File(tmp_path / "img.h5", "w") as f:
        f.create_dataset("obsm/image", data=imgs)
    f = h5py.File(tmp_path / "img.h5", "r")
    return f["obsm/image"], f


@pytest.mark.parametrize("store", ["h5py", "zarr", "memmap"])
def test_images_on_disk_train_like_the_same_images_in_memory(tmp_path, monkeypatch, store):
    from manifex.models import _images

    imgs, _ = _digit_images(1100)
    src, handle = _on_disk(tmp_path, imgs, store)
    monkeypatch.setattr(_images, "CHUNK_BYTES", 64 * imgs[0].nbytes)  # passes of 64 images
    reads = _spy_reads(monkeypatch, _images.BackedImages)
    kw = dict(
        n_epochs=(1, 1, 1), batch_size=64, augment="digits", progress=False, device="cpu", random_state=3
    )
    disk = mx.models.TSimCNE(**kw).fit(src)
    mem = mx.models.TSimCNE(**kw).fit(imgs)
    # a minibatch at a time in training, blocks of 1,024 in the embedding pass: never all 1,100
    assert sum(r <= 64 for r in reads) >= 3 * (1100 // 64) and max(reads) <= 1024
    assert disk.pixel_range_ == mem.pixel_range_ == (0.0, 255.0)
    assert disk.image_shape_ == mem.image_shape_ == (16, 16, 1)
    # the same pixels, seed and augmentations: the same network
    np.testing.assert_allclose(disk.embedding_, mem.embedding_, rtol=1e-4, atol=1e-4)
    # an on-disk query maps like the same images in memory
    np.testing.assert_allclose(disk.transform(src), mem.transform(imgs), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="on-disk images"):
        disk.transform(src, space="input")
    if handle is not None:
        handle.close()


def test_images_on_disk_are_checked_in_one_pass(tmp_path):
    imgs, _ = _digit_images(40)
    imgs[17, 3, 4] = np.inf
    src, handle = _on_disk(tmp_path, imgs, "h5py")
    with pytest.raises(ValueError, match=r"NaN or infinite pixel value\(s\) \(images 0–39\)"):
        mx.models.TSimCNE(n_epochs=(1, 1, 1), progress=False).fit(src)
    handle.close()


def test_tl_tsimcne_streams_images_given_on_disk(tmp_path):
    imgs, labels = _digit_images(200)
    src, handle = _on_disk(tmp_path, imgs, "h5py")
    adata = ad.AnnData(obs={"label": labels.astype(str)})
    with pytest.raises(ValueError, match=r"200 images .* 199 observations"):
        mx.tl.tsimcne(adata[:199].copy(), images=src, n_epochs=(1, 1, 1), progress=False)
    model = mx.tl.tsimcne(
        adata, images=src, n_epochs=(1, 1, 1), batch_size=50, progress=False, device="cpu", return_model=True
    )
    assert adata.obsm["X_tsimcne"].shape == (200, 2) and np.isfinite(adata.obsm["X_tsimcne"]).all()
    assert model.input_spec_["source"] == "images" and model.kind_ == "image" and model.data_fingerprint_
    handle.close()


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_cli_fit_backed_streams_images_and_genes(tmp_path, suffix):
    from manifex import cli

    imgs, labels = _digit_images(200)
    a = mx.datasets.image_anndata(imgs.astype(np.uint8), labels=labels)
    path = tmp_path / f"img{suffix}"
    a.write_h5ad(path) if suffix == ".h5ad" else a.write_zarr(path)
    opts = ["--param", "n_epochs=[1,1,1]", "--param", "batch_size=50", "--param", "progress=false"]
    opts += ["--device", "cpu", "--random-state", "1"]
    out = tmp_path / "emb.npy"
    cli.main(
        ["fit", "tsimcne", str(path), "--image-key", "image", "--backed", "--embedding-out", str(out), *opts]
    )
    emb = tmp_path / "query.npy"  # the query's images read from disk in chunks of 64
    model = tmp_path / "model.mx"
    cli.main(
        ["fit", "tsimcne", str(path), "--image-key", "image", "--backed", "--model-out", str(model), *opts]
    )
    cli.main(["transform", str(model), str(path), "--out", str(emb), "--chunk-size", "64", "--device", "cpu"])
    np.testing.assert_allclose(np.load(emb), np.load(out), rtol=1e-4, atol=1e-4)
    ref = mx.tl.tsimcne(
        a,
        image_key="image",
        n_epochs=(1, 1, 1),
        batch_size=50,
        progress=False,
        device="cpu",
        random_state=1,
        copy=True,
    )
    np.testing.assert_allclose(np.load(out), ref.obsm["X_tsimcne"], rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit, match="--embedding-out"):
        cli.main(
            [
                "fit",
                "tsimcne",
                str(path),
                "--image-key",
                "image",
                "--backed",
                "--out",
                str(tmp_path / "o.h5ad"),
            ]
        )
    with pytest.raises(SystemExit, match="no images at obsm/pixels"):
        cli.main(
            ["fit", "tsimcne", str(path), "--image-key", "pixels", "--backed", "--embedding-out", str(out)]
        )
    if suffix == ".zarr":  # genes stream from an .h5ad only
        with pytest.raises(SystemExit, match=r"write this store as \.h5ad"):
            cli.main(["fit", "dlme", str(path), "--backed", "--embedding-out", str(out), "--n-steps", "5"])
    else:  # the genes (X) of an .h5ad stay on disk too
        cli.main(
            [
                "fit",
                "dlme",
                str(path),
                "--backed",
                "--embedding-out",
                str(out),
                "--n-steps",
                "20",
                "--device",
                "cpu",
                "--param",
                "progress=false",
            ]
        )
        assert np.load(out).shape == (200, 2)
