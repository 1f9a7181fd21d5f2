"""Helpers for the end-to-end workflow tests: scratch copies of the workflow, a
Snakemake runner, one shared finished demo run, a local SLURM cluster and headless
Chromium (both installed with apt-get when missing).

Every Snakemake run happens in a temporary copy of the workflow (Snakefile, workflow/,
config/), never in the repository itself, so the tests neither lock the repository's
`.snakemake/` nor touch its `results/`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from brainldm.model_files import REQUIRED_COMPONENTS

REPO = Path(__file__).resolve().parents[2]

# Overrides merged over config/demo.yaml for the test runs (the demo made smaller; the
# file says how): the catalog's place for a workflow's test config.
TEST_CONFIG: dict = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
# What the shared demo run (and every command without explicit targets) asks for;
# empty: `rule all`, the whole DAG.
DEMO_TARGETS: list[str] = []


def snakemake_command() -> list[str]:
    """`python -m snakemake` with the interpreter running the tests (the project venv)."""
    return [sys.executable, "-m", "snakemake"]


def workflow_env(workdir: Path) -> dict[str, str]:
    """Environment for a Snakemake run: offline models, caches inside `workdir`."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    cache = workdir / ".cache"
    env.setdefault("HF_HOME", str(cache / "huggingface"))
    env.setdefault("XDG_CONFIG_HOME", str(cache / "config"))
    env.setdefault("MPLCONFIGDIR", str(cache / "matplotlib"))
    # The venv's bin first, so that jobs (also SLURM jobs) find `python -m snakemake`.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def copy_workflow(dest: Path, config_overrides: dict | None = None) -> Path:
    """Copy Snakefile, workflow/, config/ and resources/ (without the NSD download
    folder resources/nsd) of the repository into `dest`.

    Writes `config/test.yaml` with TEST_CONFIG updated by `config_overrides` (merged
    over config/demo.yaml by `WorkflowRun.config_args`). Returns `dest`.
    """
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copy2(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore, dirs_exist_ok=True)
    # Small inputs of the repository (CLIP's tokenizer, built by make install), not downloads.
    shutil.copytree(
        REPO / "resources",
        dest / "resources",
        ignore=lambda d, names: [n for n in ignore(d, names)]
        + (["nsd"] if Path(d) == REPO / "resources" else []),
        dirs_exist_ok=True,
    )
    overrides = deep_update(dict(TEST_CONFIG), config_overrides or {})
    (dest / "config" / "test.yaml").write_text(yaml.safe_dump(overrides or {}))
    return dest


def model_folder_layout(folder: Path) -> None:
    """A folder with every file the parse-time model check looks for (empty stand-ins: a dry
    run loads nothing)."""
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({c: ["diffusers", "X"] for c in REQUIRED_COMPONENTS}))
    for component, (configs, weights) in REQUIRED_COMPONENTS.items():
        (folder / component).mkdir()
        (folder / component / configs[0]).write_text("{}")
        if weights:
            (folder / component / f"{weights[0]}.safetensors").write_bytes(b"")


def deep_update(base: dict, extra: dict) -> dict:
    """`base` with `extra` merged in recursively, as Snakemake merges config files."""
    from brainldm.config_check import merge_configs

    return merge_configs(base, extra)


@dataclass
class WorkflowRun:
    """A scratch copy of the workflow and the commands run in it."""

    workdir: Path
    targets: list[str] = field(default_factory=lambda: list(DEMO_TARGETS))
    history: list[subprocess.CompletedProcess] = field(default_factory=list)
    # The Snakefile to run, if not the one in `workdir` (see `clone`).
    snakefile: Path | None = None

    @property
    def config_args(self) -> list[str]:
        """Snakefile and config files of every command (relative to `workdir`)."""
        args = ["--snakefile", str(self.snakefile)] if self.snakefile else []
        return args + ["--configfile", "config/demo.yaml", "config/test.yaml"]

    def snakemake(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 600,
        cores: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run `snakemake --configfile demo+test <args>` in the copy; output captured.

        Without explicit targets (after "--") asks for `self.targets`. Fails the test
        (showing the output's end) if `check` and the exit code is not 0.
        """
        cmd = snakemake_command() + self.config_args + ["--cores", str(cores), *args]
        if "--" not in args and self.targets:
            cmd += ["--", *self.targets]
        env = workflow_env(self.workdir)
        env.update(extra_env or {})
        # Own process group: on a timeout Snakemake and its running jobs stop together.
        popen = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            stdout, stderr = popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGTERM)  # Snakemake stops its jobs and unlocks
            try:
                stdout, stderr = popen.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(popen.pid, signal.SIGKILL)
                stdout, stderr = popen.communicate()
            pytest.fail(
                f"snakemake {' '.join(args)} took more than {timeout:.0f} s in {self.workdir}:\n"
                + tail(stdout + stderr, 80)
            )
        proc = subprocess.CompletedProcess(cmd, popen.returncode, stdout, stderr)
        self.history.append(proc)
        if check and proc.returncode != 0:
            pytest.fail(
                f"snakemake {' '.join(args)} exited with {proc.returncode} in {self.workdir}:\n"
                + tail(proc.stdout + proc.stderr, 80)
            )
        return proc

    def dry_run(self, *args: str) -> dict[str, int]:
        """{rule: number of jobs} that `snakemake -n <args>` would run ({} if none)."""
        proc = self.snakemake("-n", *args)
        return parse_dry_run(proc.stdout + proc.stderr)

    def path(self, relpath: str) -> Path:
        return self.workdir / relpath

    def clone(self, dest: Path) -> "WorkflowRun":
        """Copy the whole run (results and .snakemake metadata, mtimes kept) to `dest`.

        The clone keeps running this run's Snakefile: rules whose inputs are absolute
        paths inside the workflow folder (CLIP's tokenizer) would otherwise see a
        changed set of input files and rerun everything downstream.
        """
        shutil.copytree(
            self.workdir,
            dest,
            symlinks=True,
            ignore=shutil.ignore_patterns("locks", "incomplete"),
            dirs_exist_ok=True,
        )
        snakefile = self.snakefile or self.workdir / "Snakefile"
        return WorkflowRun(dest, targets=list(self.targets), snakefile=snakefile)


def parse_dry_run(text: str) -> dict[str, int]:
    """Job counts per rule from the table Snakemake prints for a dry run.

    The table reads::

        Job stats:
        job          count
        ---------  -------
        all              1
        ingest           2
        total            3

    Returns {} when nothing would run ("Nothing to be done").
    """
    counts: dict[str, int] = {}
    lines = text.splitlines()
    for start, line in enumerate(lines):
        if line.strip() == "Job stats:":
            break
    else:
        return counts
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def tail(text: str, n: int) -> str:
    return "\n".join(text.splitlines()[-n:])


def file_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path, pattern: str = "**/*") -> dict[str, str]:
    """sha256 of every file under `root` matching `pattern`, keyed by relative path."""
    return {
        str(p.relative_to(root)): file_digest(p)
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> WorkflowRun:
    """One finished run of the demo DAG (with TEST_CONFIG), shared by the workflow
    tests. Tests that change files work on `demo_run.clone(tmp_path / ...)`.

    BRAINLDM_TEST_DEMO_RUN=<folder> keeps the run in <folder> (made on first use) for
    later sessions instead; only for developing these tests.
    """
    reuse = os.environ.get("BRAINLDM_TEST_DEMO_RUN")
    if reuse:  # while developing these tests: a finished run kept from an earlier session
        run = WorkflowRun(Path(reuse))
        if not (run.workdir / "Snakefile").exists():
            copy_workflow(run.workdir)
    else:
        run = WorkflowRun(copy_workflow(tmp_path_factory.mktemp("demo_run")))
    run.snakemake(timeout=3600)  # a few minutes on 2 idle cores; the limit is a safeguard
    return run


# --- Debian packages -------------------------------------------------------------


def ensure_debian_packages(packages: list[str], binaries: list[str]) -> None:
    """Install Debian `packages` with apt-get unless every one of `binaries` is on PATH.

    Skips the calling test (with the reason) when that is impossible: not root, no
    apt-get, or the installation fails.
    """
    if all(shutil.which(b) for b in binaries):
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"needs {packages} and apt-get is not available to install them")
    if os.geteuid() != 0:
        pytest.skip(f"needs {packages}; installing them with apt-get needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    proc = subprocess.run(install, env=env, capture_output=True, text=True)
    if proc.returncode != 0:  # stale or missing package lists: update and retry
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True)
        proc = subprocess.run(install, env=env, capture_output=True, text=True)
    missing = [b for b in binaries if shutil.which(b) is None]
    if proc.returncode != 0 or missing:
        pytest.skip(
            f"apt-get install {' '.join(packages)} failed (exit {proc.returncode}, "
            f"missing {missing}):\n{tail(proc.stdout + proc.stderr, 15)}"
        )


# --- a one-node SLURM cluster on localhost ----------------------------------------

SLURM_CONF_LINK = Path("/etc/slurm/slurm.conf")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf_text(d: Path, munge_socket: Path, cpus: int, mem_mb: int) -> str:
    """A single-node slurm.conf for localhost with everything under `d` (no accounting)."""
    return f"""\
ClusterName=brainldmtest
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=300
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmdSpoolDir={d}/spool
StateSaveLocation={d}/state
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class LocalSlurm:
    """A running one-node SLURM (munged, slurmctld, slurmd started by the test)."""

    directory: Path
    conf: Path
    procs: dict[str, subprocess.Popen]

    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def command(self, *args: str) -> str:
        """Output of a SLURM client command (scontrol, squeue, ...) against this cluster."""
        proc = subprocess.run(
            list(args), env=dict(os.environ, **self.env()), capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr}"
        return proc.stdout

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{tail(p.read_text(errors='replace'), 30)}"
            for p in sorted(self.directory.glob("*.log"))
        )


def _wait_for(predicate, timeout: float, what: str, on_fail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{on_fail()}")


def _stop(procs: dict[str, subprocess.Popen]) -> None:
    """SIGTERM each process we started (by pid, reverse start order), then SIGKILL."""
    for name, proc in reversed(list(procs.items())):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)


@pytest.fixture(scope="session")
def local_slurm(tmp_path_factory) -> Iterator[LocalSlurm]:
    """Debian's SLURM + munge, run as a one-node cluster on localhost for the session.

    The daemons run in the foreground as children of the test process and are stopped
    by their pids afterwards. /etc/slurm/slurm.conf is pointed (symlink) at the
    temporary config because the plugin's job step drops SLURM_CONF inside jobs; a
    previous file there is put back at the end.
    """
    if sys.platform != "linux":
        pytest.skip("the local SLURM cluster needs Linux")
    ensure_debian_packages(
        ["slurm-wlm", "munge"], ["slurmctld", "slurmd", "sbatch", "squeue", "munged"]
    )
    if os.geteuid() != 0:
        pytest.skip("running slurmd and munged as their users needs root")

    # Not under pytest's basetemp: munged (running as user munge) must be able to
    # traverse every directory on the way to its key and socket, and basetemp is 0700.
    d = Path(tempfile.mkdtemp(prefix="brainldm-slurm-"))
    d.chmod(0o755)
    for sub in ("spool", "state"):
        (d / sub).mkdir()
    munge_key_dir, munge_run_dir = d / "munge", d / "munge-run"
    import pwd

    munge_user = pwd.getpwnam("munge")
    for sub, mode in ((munge_key_dir, 0o700), (munge_run_dir, 0o755)):
        sub.mkdir()
        os.chown(sub, munge_user.pw_uid, munge_user.pw_gid)
        sub.chmod(mode)
    key = munge_key_dir / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chown(key, munge_user.pw_uid, munge_user.pw_gid)
    key.chmod(0o400)
    munge_socket = munge_run_dir / "munge.socket"

    cpus = os.cpu_count() or 2
    # slurmd drains a node that has less memory than configured: offer 90 % of it.
    mem_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)
    conf = d / "slurm.conf"
    conf.write_text(slurm_conf_text(d, munge_socket, cpus=cpus, mem_mb=mem_mb))

    backup = None
    if SLURM_CONF_LINK.is_symlink() or SLURM_CONF_LINK.exists():
        backup = d / "previous-slurm.conf"
        shutil.move(SLURM_CONF_LINK, backup)
    SLURM_CONF_LINK.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF_LINK.symlink_to(conf)

    env = dict(os.environ, SLURM_CONF=str(conf))
    procs: dict[str, subprocess.Popen] = {}
    cluster = LocalSlurm(d, conf, procs)

    def start(name: str, cmd: list[str], **kw) -> None:
        out = open(d / f"{name}.out", "w")
        procs[name] = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
        )

    def node_idle() -> bool:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {proc.returncode}:\n"
                    + (d / f"{name}.out").read_text()
                    + cluster.logs()
                )
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True
        ).stdout.strip()
        return out == "idle"

    def cancel_jobs() -> None:
        """scancel every job of this cluster and wait until their processes are gone
        (slurmstepd outlives slurmd otherwise); kill leftovers by pid."""
        def run(*cmd: str) -> str:
            return subprocess.run(cmd, env=env, capture_output=True, text=True).stdout

        jobs = run("squeue", "-h", "-o", "%i").split()
        if not jobs:
            return
        pids = [int(line.split()[0]) for line in run("scontrol", "listpids").splitlines()[1:]
                if line.split() and line.split()[0].isdigit()]
        run("scancel", *jobs)
        try:
            _wait_for(lambda: not run("squeue", "-h", "-o", "%i").split(), 30, "cancelled jobs")
        except RuntimeError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    try:
        start(
            "munged",
            [
                "munged",
                "--foreground",
                f"--key-file={key}",
                f"--socket={munge_socket}",
                f"--pid-file={munge_run_dir / 'munged.pid'}",
                f"--log-file={munge_key_dir / 'munged.log'}",
                f"--seed-file={munge_key_dir / 'munged.seed'}",
            ],
            user=munge_user.pw_uid,
            group=munge_user.pw_gid,
            extra_groups=[],
        )
        _wait_for(munge_socket.exists, 15, "munged's socket", cluster.logs)
        start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)])
        start("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(conf)])
        _wait_for(node_idle, 60, "the SLURM node to become idle", cluster.logs)
        yield cluster
    finally:
        if "slurmd" in procs:
            cancel_jobs()
        _stop(procs)
        SLURM_CONF_LINK.unlink(missing_ok=True)
        if backup is not None:
            shutil.move(backup, SLURM_CONF_LINK)
        shutil.rmtree(d, ignore_errors=True)


# --- headless Chromium --------------------------------------------------------------


def chromium_binary() -> str:
    """Path of Debian's chromium, installed with apt-get when missing (else skip)."""
    ensure_debian_packages(["chromium"], ["chromium"])
    return shutil.which("chromium")  # type: ignore[return-value]


def chromium_screenshot(
    html: Path, png: Path, profile_dir: Path, size: tuple[int, int] = (1400, 1000)
) -> subprocess.CompletedProcess:
    """Open `html` in headless Chromium and write a screenshot to `png`."""
    cmd = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        f"--window-size={size[0]},{size[1]}",
        "--virtual-time-budget=10000",
        f"--screenshot={png}",
        html.resolve().as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# --- the rule graph ----------------------------------------------------------------


def rule_graph(run: WorkflowRun, *targets: str) -> dict[str, set[str]]:
    """{rule: rules that consume its outputs} from `snakemake --rulegraph dot`."""
    proc = run.snakemake("--rulegraph", "dot", *(["--", *targets] if targets else []))
    labels: dict[str, str] = {}
    children: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "[label" in line:
            node, rest = line.split("[", 1)
            labels[node] = rest.split('"')[1]
        elif "->" in line:
            a, b = (x.strip() for x in line.split("->"))
            children.setdefault(a, set()).add(b)
    return {labels[n]: {labels[c] for c in children.get(n, ())} for n in labels}


def downstream(graph: dict[str, set[str]], rule: str) -> set[str]:
    """`rule` and every rule that (transitively) consumes its outputs."""
    seen, todo = {rule}, [rule]
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def upstream(graph: dict[str, set[str]], rule: str) -> set[str]:
    """`rule` and every rule it (transitively) depends on."""
    parents: dict[str, set[str]] = {}
    for r, kids in graph.items():
        for k in kids:
            parents.setdefault(k, set()).add(r)
    return downstream(parents, rule)


# --- comparing outputs by content ------------------------------------------------------


def content_difference(a: Path, b: Path) -> str | None:
    """None if files `a` and `b` hold the same data, else a short description.

    Compares what the file holds, not its bytes, where a format stores write times:
    .npy/.npz arrays, every HDF5 dataset and attribute, NIfTI data and affine (gzip
    headers carry an mtime), MATLAB variables (the header has a date), PNG pixels. Anything else byte for byte.
    """
    import numpy as np

    def same(x, y) -> bool:  # NaN equals NaN (e.g. the correlation of a constant column)
        try:
            return bool(np.array_equal(x, y, equal_nan=True))
        except TypeError:  # strings, objects
            return bool(np.array_equal(x, y))

    name = a.name
    if name.endswith(".npy"):
        x, y = np.load(a), np.load(b)
        return None if x.dtype == y.dtype and same(x, y) else "array differs"
    if name.endswith(".npz"):
        with np.load(a) as x, np.load(b) as y:
            if sorted(x.files) != sorted(y.files):
                return f"keys {sorted(x.files)} != {sorted(y.files)}"
            bad = [k for k in x.files if not same(x[k], y[k])]
            return f"arrays {bad} differ" if bad else None
    if name.endswith((".h5", ".hdf5")):
        import h5py

        def items(f):
            out = {}
            f.visititems(lambda k, v: out.__setitem__(k, v))
            return out

        with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
            ia, ib = items(fa), items(fb)
            if sorted(ia) != sorted(ib):
                return f"objects {sorted(ia)} != {sorted(ib)}"
            for k in ia:
                if isinstance(ia[k], h5py.Dataset) and not same(ia[k][()], ib[k][()]):
                    return f"dataset {k} differs"
                if dict(ia[k].attrs).keys() != dict(ib[k].attrs).keys():
                    return f"attrs of {k} differ"
        return None
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        x, y = nib.load(a), nib.load(b)
        equal = same(np.asarray(x.dataobj), np.asarray(y.dataobj)) and np.allclose(
            x.affine, y.affine
        )
        return None if equal else "NIfTI data or affine differs"
    if name.endswith(".mat"):  # the header holds the creation time
        from scipy.io import loadmat

        x, y = loadmat(a), loadmat(b)
        keys = sorted(k for k in x if not k.startswith("__"))
        if keys != sorted(k for k in y if not k.startswith("__")):
            return "variables differ"
        bad = [k for k in keys if not same(x[k], y[k])]
        return f"variables {bad} differ" if bad else None
    if name.endswith(".png"):
        from PIL import Image

        equal = np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
        return None if equal else "pixels differ"
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"
