"""The one thread limit caps torch and the BLAS/OpenMP pools (in a fresh process: the limit is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = """
import json, torch
from threadpoolctl import threadpool_info
from brainldm.threads import limit_threads
before = torch.get_num_threads()
limit_threads(None)
unchanged = torch.get_num_threads() == before
limit_threads(1)
print(json.dumps(dict(unchanged=unchanged, torch=torch.get_num_threads(),
                      pools=[p["num_threads"] for p in threadpool_info()])))
"""


def test_limit_threads_caps_torch_and_blas():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = json.loads(subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                                    check=True, env=env).stdout)
    assert out["unchanged"]
    assert out["torch"] == 1
    assert out["pools"] and all(n == 1 for n in out["pools"])
