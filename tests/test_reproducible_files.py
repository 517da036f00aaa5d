"""The same tensors and metadata give the same safetensors bytes, in any process.

The safetensors library writes its metadata map in hash order, so without
ganzip's canonical header two runs of the same job would give files with
different SHA-256 sums although their content is equal.
"""
import hashlib
import json
import subprocess
import sys

from safetensors import safe_open

SCRIPT = """
import sys, torch
from ganzip.io import save_safetensors_atomic
save_safetensors_atomic({"w": torch.arange(6.).reshape(2, 3), "n": torch.ones(4, dtype=torch.int64)},
                        sys.argv[1], metadata={f"key{i}": f"value {i}" for i in range(24)})
"""


def _write(path, seed):
    env = {"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", SCRIPT, str(path)], check=True, env=env)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_processes_write_the_same_bytes(tmp_path):
    digests = {_write(tmp_path / f"f{seed}.safetensors", seed) for seed in (1, 2, 3)}
    assert len(digests) == 1


def test_the_canonical_file_reads_back_unchanged(tmp_path):
    path = tmp_path / "f.safetensors"
    _write(path, 7)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {f"key{i}": f"value {i}" for i in range(24)}
        assert f.get_tensor("w").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert f.get_tensor("n").tolist() == [1, 1, 1, 1]
    n = int.from_bytes(path.read_bytes()[:8], "little")
    assert n % 8 == 0
    header = json.loads(path.read_bytes()[8:8 + n])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
