"""Kill a run and resume it: are the outputs byte-identical to an uninterrupted run's?

    python -m avatar.engine.fault_injection --out /tmp/fi --kill-at 10 -- \
        stage=appearance body.topology=notoes_collapse5pc trainer.max_steps=20 \
        trainer.checkpoint_every_n_steps=5 stage.init_steps=50 stage.export_resolution=64

runs ``train.py <overrides>`` three times in ``--out``: ``straight/`` uninterrupted; ``stopped/``
killed (SIGKILL, or ``--signal TERM``) once the checkpoint of step ``--kill-at`` exists (or, with
``--kill-after-file``, once that file exists in the run directory: e.g. ``2_appearance/
checkpoints/step000010.ckpt`` for a pipeline), then rerun in the same directory (with
``resume=auto``, or as-is for a pipeline, which continues by itself). It prints, and returns,
every output file of the two directories with whether their bytes agree. Timings, logs and run
records are left out (they differ by nature). The two folder names have the same length, and a
file that names its own run folder (e.g. a glTF's provenance) is compared with that path masked:
such files are reported "same (its run folder's path aside)".
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from avatar.utils.paths import PROJECT_ROOT

# Files that record *how* a run ran (times, commands, segments), not what it produced.
RECORDS = {
    "run_info.json",
    "config_resolved.yaml",
    "cli.log",
    "train.log",
    "traceback.txt",
    "pipeline.json",
    "result.json",
}
RECORD_DIRS = {".hydra", "csv", "tensorboard", "wandb", "checkpoints"}


def train(run_dir: Path, overrides: list[str], extra: list[str] = (), wait: bool = True):
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *overrides, *extra, f"hydra.run.dir={run_dir}"]
    log = open(run_dir.parent / f"{run_dir.name}.{int(time.time() * 1000)}.log", "w")
    proc = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if wait:
        if proc.wait() != 0:
            raise RuntimeError(f"{' '.join(command)} failed (exit {proc.returncode}); see {log.name}")
    return proc


def kill_when(proc: subprocess.Popen, marker: Path, sig: int, timeout: float = 3600, delay: float = 0.0) -> None:
    start = time.time()
    while not marker.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.returncode}) before {marker} appeared")
        if time.time() - start > timeout:
            proc.kill()
            raise TimeoutError(f"{marker} did not appear within {timeout} s")
        time.sleep(0.05)
    time.sleep(delay)
    proc.send_signal(sig)
    proc.wait()


def outputs(run_dir: Path) -> list[str]:
    files = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if (
            path.is_file()
            and path.name not in RECORDS
            and not RECORD_DIRS & set(rel.parts)
            and not path.name.startswith(".")
            and not path.name.startswith("git_diff.")
        ):
            files.append(str(rel))
    return files


def compare(a: Path, b: Path) -> dict[str, str]:
    names = sorted(set(outputs(a)) | set(outputs(b)))
    return {name: _compare_file(a, b, name) for name in names}


def _compare_file(a: Path, b: Path, name: str) -> str:
    if not ((a / name).is_file() and (b / name).is_file()):
        return "missing"
    if filecmp.cmp(a / name, b / name, shallow=False):
        return "same"
    da, db = str(a.resolve()).encode(), str(b.resolve()).encode()
    if len(da) == len(db):
        mask = b"#" * len(da)
        if (a / name).read_bytes().replace(da, mask) == (b / name).read_bytes().replace(db, mask):
            return "same (its run folder's path aside)"
    return "DIFFERENT"


def kill_and_resume(
    out: Path, overrides: list[str], marker: str, sig: int = signal.SIGKILL, pipeline: bool = False, delay: float = 0.0
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    straight, killed = out / "straight", out / "stopped_"  # same length: see compare
    train(straight, overrides)
    proc = train(killed, overrides, wait=False)
    kill_when(proc, killed / marker, sig, delay=delay)
    exit_code = proc.returncode
    train(killed, overrides, [] if pipeline else ["resume=auto"])
    files = compare(straight, killed)
    identical = all(v.startswith("same") for v in files.values())
    return {"killed_exit_code": exit_code, "files": files, "identical": identical}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the two runs")
    parser.add_argument("--kill-at", type=int, default=None, help="kill once checkpoints/step<N>.ckpt exists")
    parser.add_argument("--kill-after-file", default=None, help="kill once this file (relative to the run) exists")
    parser.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"])
    parser.add_argument("overrides", nargs="+", help="train.py overrides (after --)")
    args = parser.parse_args(argv)
    marker = args.kill_after_file or f"checkpoints/step{args.kill_at:06d}.ckpt"
    pipeline = any(o.startswith("pipeline=") for o in args.overrides)
    report = kill_and_resume(args.out, args.overrides, marker, getattr(signal, f"SIG{args.signal}"), pipeline)
    print(json.dumps(report, indent=2))
    return 0 if report["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
