"""Fuzz target: WSL's config file syntax never raises, whatever the bytes.

    python tests/fuzz/fuzz_wsl_conf.py --budget SECONDS [--engine auto|atheris|hypothesis]

Each input is read as /etc/wsl.conf, as /etc/wsl-distribution.conf and as both lxss config files.
Besides "never raises", it checks what the parser promises: warnings name a line of the input,
print safely (no control characters reach the user's terminal), and a sanitised hostname is a
valid one.

With atheris installed, libFuzzer drives it from the seed corpus in corpus/wsl_conf/ (new inputs
go to a scratch directory removed afterwards, never into the seeds; a failing input is written
to crash-<sha1> in the current directory).
Without atheris, hypothesis mutates the seeds and generates fresh inputs until the budget is
spent. `--budget 0` runs the seed corpus once and stops, with either engine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent
SEED_CORPUS = HERE / "corpus" / "wsl_conf"
sys.path.insert(0, str(HERE.parents[1] / "src"))  # runnable from a checkout without installing
sys.path.insert(0, str(HERE))  # budget.py, also when loaded from elsewhere

from budget import run_batches  # noqa: E402

from lxss.config import lxssconf, syntax, wslconf  # noqa: E402

_LABEL = r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})?")  # what WSL's CleanHostname can produce


def test_one_input(data: bytes) -> None:
    """Parse `data` every way lxss parses config files; raise AssertionError on a broken promise."""
    text = data.decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").count("\n") + 1

    conf, warnings = wslconf.load_wsl_conf(text)
    _check_warnings(warnings, lines)
    hostname = conf.hostname(fallback=text[:80])
    assert len(hostname) <= wslconf.HOSTNAME_MAX and _HOSTNAME.fullmatch(hostname), hostname

    _, warnings = wslconf.load_wsl_distribution_conf(text)
    _check_warnings(warnings, lines)

    config, warnings = lxssconf.load_lxss_config(text, "/m", text, "/u", 8 << 30, 4)
    _check_warnings(warnings, lines)
    assert lxssconf.MIN_MEMORY_BYTES <= config.memory_bytes <= 8 << 30
    assert 1 <= config.processors <= 4 and config.pids_limit >= 1


def _check_warnings(warnings: Sequence[syntax.ConfigWarning], lines: int) -> None:
    for warning in warnings:
        assert warning.line is None or 1 <= warning.line <= lines, warning
        shown = str(warning)
        assert shown.isprintable(), repr(shown)


def run_corpus(corpus: Path = SEED_CORPUS) -> int:
    """Run every file of `corpus` through the target once; returns how many ran."""
    files = sorted(path for path in corpus.iterdir() if path.is_file())
    for path in files:
        try:
            test_one_input(path.read_bytes())
        except Exception as error:
            raise AssertionError(f"fuzz target failed on {path}") from error
    return len(files)


def fuzz_with_atheris(budget: int, corpus: Path) -> int:
    """Run libFuzzer for `budget` seconds in a child process; returns its exit status.

    libFuzzer ends the process with exit(), which skips Python's cleanup, so it runs in a child and
    this process keeps ownership of the scratch directory.
    """
    with tempfile.TemporaryDirectory(prefix="fuzz_wsl_conf.") as scratch:
        pid = os.fork()
        if pid == 0:
            try:
                _libfuzzer(budget, scratch, corpus)
            finally:
                os._exit(1)  # libFuzzer exits by itself; atheris lets only a failure out
        try:
            _, status = os.waitpid(pid, 0)
        except KeyboardInterrupt:
            os.waitpid(pid, 0)  # ^C reached the child too: let it stop before the cleanup
            raise
    return os.waitstatus_to_exitcode(status)


def _libfuzzer(budget: int, scratch: str, corpus: Path) -> None:
    # Imported here: only this engine needs it, and it may be absent.
    import atheris  # type: ignore[import-untyped,unused-ignore]

    atheris.instrument_all()
    # New inputs go to the first directory; the seeds are only read.
    argv = [sys.argv[0], f"-max_total_time={budget}", "-timeout=10", scratch, str(corpus)]
    atheris.Setup(argv, _saving_failures)
    atheris.Fuzz()


def _saving_failures(data: bytes) -> None:
    # atheris prints an uncaught exception and returns it from Fuzz() without writing the input
    # anywhere, so keep it as libFuzzer would: crash-<sha1> in the current directory.
    try:
        test_one_input(data)
    except BaseException:
        path = Path(f"crash-{hashlib.sha1(data).hexdigest()}")
        path.write_bytes(data)
        print(f"fuzz_wsl_conf: failing input written to {path}", file=sys.stderr)
        raise


def fuzz_with_hypothesis(budget: float, corpus: Path) -> int:
    """Generate and mutate inputs until `budget` seconds are spent; returns how many batches ran.
    A failing input raises, after hypothesis has shrunk it."""
    seeds = [path.read_bytes() for path in sorted(corpus.iterdir()) if path.is_file()]
    config_text = st.text(alphabet=' \t\r\n[]=#"\\.abcdeghilmnorstuwyABCN01x-_\x00\x1b\u00e9')
    inputs = st.one_of(
        st.sampled_from(seeds).flatmap(_mutations),
        config_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.binary(max_size=2048),
    )

    return run_batches(inputs, test_one_input, budget)


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    edit = st.tuples(
        st.integers(0, len(seed)), st.sampled_from("ird"), st.binary(min_size=1, max_size=6)
    )
    return st.lists(edit, max_size=6).map(lambda edits: _apply(seed, edits))


def _apply(seed: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    data = bytearray(seed)
    for position, kind, chunk in edits:
        at = min(position, len(data))
        if kind == "i":  # insert
            data[at:at] = chunk
        elif kind == "r":  # replace
            data[at : at + len(chunk)] = chunk
        else:  # delete
            del data[at : at + len(chunk)]
    return bytes(data)


def _have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, required=True, help="seconds to fuzz; 0: seeds only")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--corpus", type=Path, default=SEED_CORPUS, help="seed corpus directory")
    args = parser.parse_args(argv)

    count = run_corpus(args.corpus)
    print(f"fuzz_wsl_conf: {count} seed inputs ok", file=sys.stderr)
    if args.budget <= 0:
        return 0
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "hypothesis"
    if engine == "atheris":
        return fuzz_with_atheris(args.budget, args.corpus)
    batches = fuzz_with_hypothesis(args.budget, args.corpus)
    print(f"fuzz_wsl_conf: hypothesis ran {batches} batches, no failure", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
