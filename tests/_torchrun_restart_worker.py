"""Worker of ``test_distributed_torchrun_restart_resumes`` (run by ``torchrun --max-restarts 1``).

``python _torchrun_restart_worker.py OUTDIR KILL_AT``: on the first attempt each rank fits DLME
once without a checkpoint (the uninterrupted reference), then again with a checkpoint written
every epoch, and rank 1 kills itself (SIGKILL) at step ``KILL_AT`` of that fit. torchrun then
restarts both ranks; the second attempt resumes the checkpointed fit. Each rank writes its
models (weights and embedding) and the first step each checkpointed attempt trained.

The kill is hooked in here, around the trainer DLME calls (its ``before_step``); the package
has no test hook.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

import manifex as mx
import manifex.train._plan as plan_module
from manifex.train._distributed import init_from_env

out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
attempt = int(os.environ["TORCHELASTIC_RESTART_COUNT"])
w = init_from_env("cpu")
trainer = plan_module.train


def killing_train(step_fn, **kwargs):
    before = kwargs.get("before_step")
    checkpointed = kwargs.get("checkpoint") is not None
    first: list[int] = []

    def before_step(step: int) -> None:
        if checkpointed and not first:
            first.append(step)
            (out / f"first_step_{attempt}_{w.rank}.txt").write_text(str(step))
        if checkpointed and attempt == 0 and w.rank == 1 and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if before is not None:
            before(step)

    return trainer(step_fn, **{**kwargs, "before_step": before_step})


plan_module.train = killing_train


def result(model: mx.models.DLME) -> dict[str, np.ndarray]:
    res = {"embedding": model.embedding_}
    for name, net in (("enc", model.encoder_), ("proj", model.projector_)):
        res.update({f"{name}.{k}": v.cpu().numpy() for k, v in net.state_dict().items()})
    return res


rng = np.random.default_rng(0)
x = (rng.normal(scale=4.0, size=(3, 10))[rng.integers(0, 3, 240)] + rng.normal(size=(240, 10))).astype(
    np.float32
)
params = dict(n_steps=24, batch_size=60, progress=False, device="cpu", random_state=0)
if attempt == 0:
    np.savez(out / f"reference_{w.rank}.npz", **result(mx.models.DLME(**params).fit(x)))
model = mx.models.DLME(**params, checkpoint=out / "run.ckpt", checkpoint_every=1).fit(x)
np.savez(out / f"resumed_{w.rank}.npz", **result(model))
