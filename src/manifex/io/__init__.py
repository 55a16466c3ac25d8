"""The safe file format of manifex models and training checkpoints.

Tensors are stored with safetensors and everything else as JSON (:mod:`manifex.io._format`,
:mod:`manifex.io._encode`); fitted scikit-learn / UMAP state is written as plain arrays
(:mod:`manifex.io._sklearn_state`); :mod:`manifex.io._models` saves and loads whole models by
their registered class name, with the record of their AnnData input
(:class:`~manifex.io._input_spec.InputSpec`). Reading a file never executes code from it.
"""

from ._format import FORMAT_VERSION, ModelFileError, read_file, write_file
from ._input_spec import InputSpec
from ._models import convert_legacy_file, load_model_file, model_class, register_model, save_model

__all__ = [
    "FORMAT_VERSION",
    "InputSpec",
    "ModelFileError",
    "convert_legacy_file",
    "load_model_file",
    "model_class",
    "read_file",
    "register_model",
    "save_model",
    "write_file",
]
