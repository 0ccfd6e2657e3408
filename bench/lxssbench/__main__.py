"""bench/run: measure lxss against its peers and write results/latest.md and latest.png."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType

from lxss.linux.syscalls import set_child_subreaper

from . import machine, report
from .figures import ORDER, SPECS, run_figure
from .harness import Figure
from .install import ensure_packages
from .lab import FULL, QUICK, Lab, PeerStatus, Settings
from .proc import reap_orphans, unowned_children
from .runlock import clear_leftovers, one_at_a_time

BENCH = Path(__file__).resolve().parents[1]


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="small counts, busybox only, under 2 minutes: checks the suite runs",
    )
    mode.add_argument("--full", action="store_true", help="the real measurement (default)")
    p.add_argument(
        "--only", metavar="IDS", help=f"comma-separated figure ids to run: {', '.join(ORDER)}"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="where latest.md and latest.png go (default: bench/results for a "
        "complete full run, bench/results/scratch otherwise)",
    )
    p.add_argument(
        "--lxss",
        metavar="PATH",
        help="the lxss command to measure "
        "(default: lxss on PATH, then /usr/local/bin, then the repo's venv)",
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    p.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        default=1800.0,
        help="how long to wait for another bench run to finish (default 1800)",
    )
    p.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the work directory under /var/tmp for inspection",
    )
    args = p.parse_args(argv)
    if args.only:
        wanted = [x.strip() for x in args.only.split(",") if x.strip()]
        unknown = [x for x in wanted if x not in SPECS]
        if unknown:
            p.error(f"unknown figure id(s) {', '.join(unknown)}; known: {', '.join(ORDER)}")
        args.only = wanted
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into an exception so every `finally` below runs and
    # the bench leaves no user, container, mount or distribution behind.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench/run: run me as root (lxssd, podman and namespaces need it)", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    complete = settings is FULL and not args.only
    out: Path = args.out or (BENCH / "results" if complete else BENCH / "results" / "scratch")
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()

    for warning in [] if args.no_install else ensure_packages():
        print(f"bench: warning: {warning}", file=sys.stderr)
    set_child_subreaper()
    with one_at_a_time(wait=args.wait):
        for what in clear_leftovers():
            print(f"bench: removed a leftover of a killed run: {what}", file=sys.stderr)
        figures, desc, peers = _measure(args, settings)

    seconds = time.monotonic() - t0
    shown = " ".join(sys.argv[1:] if argv is None else argv)
    text = report.markdown(
        figures,
        mode=settings.name,
        command=f"bench/run {shown}".strip(),
        started=started,
        seconds=seconds,
        machine=desc,
        peers=peers,
        partial=bool(args.only),
    )
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "latest.md", out / "latest.png"
    tmp = out / ".latest.md.tmp"
    tmp.write_text(text)
    tmp.rename(md)
    title = (
        f"lxss benchmarks, {settings.name} mode, {started:%Y-%m-%d} — "
        f"{desc['CPU']}; Linux {desc['Kernel']}"
    )
    try:
        report.plot(figures, png, title=title)
    except ImportError as exc:
        print(f"bench: warning: no plot ({exc}); install the bench extra", file=sys.stderr)
    print(f"bench: wrote {md} and {png} in {seconds:.0f} s", file=sys.stderr)
    return 0


def _measure(
    args: argparse.Namespace, settings: Settings
) -> tuple[list[Figure], dict[str, str], list[PeerStatus]]:
    """Run the figures; whatever happens, tear down everything they set up."""
    ids = args.only or list(ORDER)
    work = Path(tempfile.mkdtemp(prefix="lxss-bench.", dir="/var/tmp"))
    work.chmod(0o755)  # rootless podman's user reads the tarball and host files here
    figures: list[Figure] = []
    lab = Lab(settings, work, args.lxss)
    keep = args.keep_work
    try:
        where = lab.lxss.path or lab.lxss.why_missing
        print(f"bench: {settings.name} mode, lxss = {where}", file=sys.stderr)
        for i, fid in enumerate(ids, 1):
            print(f"bench: [{i}/{len(ids)}] {fid}: {SPECS[fid].title}", file=sys.stderr)
            figures.append(run_figure(SPECS[fid], lab))
            reap_orphans()
        desc = machine.describe(
            sys.executable, str(lab.lxss.path or ""), lab.lxss.interpreter.describe()
        )
        return figures, desc, list(lab.peers.values())
    finally:
        try:
            lab.close()
        except Exception:  # say so, and still do the rest of the cleanup
            traceback.print_exc()
            print("bench: warning: some cleanup failed (above)", file=sys.stderr)
            keep = True
        reap_orphans()
        for pid, cmd in unowned_children():
            print(f"bench: warning: still running, not ours to kill: {pid} {cmd}", file=sys.stderr)
        if keep:
            print(f"bench: work directory kept until the next run: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
