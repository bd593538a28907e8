"""Training jobs leave torch's compiler unloaded, and train exactly as they would with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import idxdata
from conftest import REPO, prepare_idx

# Trains one short run per optimiser in a fresh interpreter, stopping and resuming each from
# its checkpoint, and prints the weights' digests and whether torch._dynamo was imported.
TRAIN_EVERY_OPTIMISER = """
import hashlib, json, os, signal, sys
from reprogrid.train import eager
from reprogrid.plan import grid
from reprogrid.config import schema as config
from reprogrid.datasets import data
from reprogrid.train import training
from reprogrid.tasks import runtime, spec
if sys.argv[2] == "skip":
    eager.skip_compiler()
schema = config.load_schema(sys.argv[3])
prepared = data.load_prepared(sys.argv[1])
task = runtime.Task.open(spec.read(spec.DEFAULT))
digests = {}
for optimizer in ("adam", "adamw", "adadelta", "sgd"):
    params = {**grid.train_defaults(schema), "arch": "mlp", "epochs": 2, "lr": 0.01,
              "optimizer": optimizer, "batch_size": 64}
    path = f"{sys.argv[4]}/{optimizer}.pt"
    def stop(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
    for on_epoch in (stop, None):
        try:
            result = training.train_one_run(task, prepared, params, val_fraction=0.1, split_seed=0,
                                             checkpoint_path=path, threads=1, on_epoch=on_epoch)
        except training.Stopped:
            continue
    digests[optimizer] = hashlib.sha256(
        b"".join(t.numpy().tobytes() for t in result.weights.values())).hexdigest()
print(json.dumps({"digests": digests, "compiler": "torch._dynamo.eval_frame" in sys.modules}))
"""


@pytest.fixture(scope="module")
def prepared_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eager")
    idxdata.write_dataset(folder / "raw", n_train=400, n_test=100, noise=150)
    prepare_idx(folder / "raw", folder / "prepared.safetensors")
    return folder / "prepared.safetensors"


def python(code: str, *args: str) -> str:
    """Run `code` in a fresh interpreter with this checkout's package; its standard output."""
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_optimiser_trains_and_resumes_to_the_same_weights_without_the_compiler(
    prepared_file, tmp_path
):
    schema = str(REPO / "workflow/schemas/config.schema.yaml")
    runs = {}
    for mode in ("skip", "load"):
        (tmp_path / mode).mkdir()
        output = python(
            TRAIN_EVERY_OPTIMISER, str(prepared_file), mode, schema, str(tmp_path / mode)
        )
        runs[mode] = json.loads(output)
    assert runs["skip"]["compiler"] is False
    assert runs["load"]["compiler"] is True
    assert runs["skip"]["digests"] == runs["load"]["digests"]


def test_anything_else_asked_of_the_stand_in_loads_the_real_compiler_which_compiles():
    code = """
import sys, torch
from reprogrid.train import eager
eager.skip_compiler()
model = torch.nn.Linear(3, 1)
optimizer = torch.optim.Adam(model.parameters())
model(torch.ones(2, 3)).sum().backward()
optimizer.step()
optimizer.zero_grad()
assert "torch._dynamo.eval_frame" not in sys.modules
import torch._dynamo.config
assert "torch._dynamo.eval_frame" not in sys.modules
assert torch._dynamo.is_compiling() is False
real = sys.modules["torch._dynamo"]
assert not isinstance(real, eager._EagerCompiler)
assert torch._dynamo is real and real.config is sys.modules["torch._dynamo.config"]
double = torch.compile(lambda x: x * 2, backend="eager")
assert double(torch.ones(2)).tolist() == [2.0, 2.0]
print("ok")
"""
    assert python(code) == "ok\n"
