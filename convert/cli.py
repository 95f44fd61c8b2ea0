"""The `longrope-convert` command: a lazy click group (no torch import at start-up) with one-line errors.

Exit codes: 0 success, 1 verification mismatch, 2 bad usage or input, 3 internal error, 130 interrupted (SIGINT),
128 + signum for SIGTERM / SIGHUP (143 / 129).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

import click

from ..formats.errors import LongRopeError, display_path

# verb -> "module:attribute"; each module is imported only when its verb (or --help) needs it.
COMMANDS = {
    "bake": "longrope_convert.convert.cmd_bake:bake",
    "inspect": "longrope_convert.convert.cmd_inspect:inspect_cmd",
    "demo": "longrope_convert.convert.cmd_demo:demo",
    "hf-to-gguf": "longrope_convert.convert.cmd_hf_to_gguf:hf_to_gguf",
    "export-onnx": "longrope_convert.convert.cmd_export_onnx:export_onnx",
    "verify": "longrope_convert.convert.cmd_verify:verify",
    "factors": "longrope_convert.convert.cmd_factors:factors",
}

EXIT_INTERNAL = 3
# CI runners and service managers cancel with SIGTERM, closed terminals send SIGHUP: both must clean up like Ctrl-C.
CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
log = logging.getLogger("longrope_convert")


class Terminated(BaseException):
    """Raised from a SIGTERM/SIGHUP handler so every `atomic_output_*` cleanup (except BaseException) runs.

    A BaseException, not a KeyboardInterrupt: click turns KeyboardInterrupt into Abort and loses the signal."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _raise_terminated(signum: int, frame) -> None:
    # Later signals are ignored so that they cannot cut the cleanup this first one starts.
    for sig in CLEANUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _cleanup_on_termination() -> Iterator[None]:
    """Install the SIGTERM/SIGHUP handlers for the run, restoring the old ones after (main() may run in-process)."""
    try:
        previous = {sig: signal.signal(sig, _raise_terminated) for sig in CLEANUP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here, leave them be
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return with_log_options(getattr(importlib.import_module(module), attr))


# The global options, accepted after the verb too (`longrope-convert bake SRC -o OUT -v`): users put them there.
LOG_OPTIONS = (
    click.Option(["-v", "--verbose", "log_verbose"], count=True, help="More log output (-vv for debug)."),
    click.Option(["-q", "--quiet", "log_quiet"], is_flag=True, help="Only warnings and errors."),
    click.Option(["--debug", "log_debug"], is_flag=True, help="Show a traceback on errors."),
)


def with_log_options(command: click.Command) -> click.Command:
    """Give `command` (and every subcommand of a group) the global -v/-q/--debug, once; given there, they
    add to those given before the verb and logging is configured again before the command runs."""
    if getattr(command, "_log_options", False):
        return command
    command._log_options = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_log_options(sub)
        return command
    command.params.extend(LOG_OPTIONS)
    callback = command.callback

    @functools.wraps(callback)
    def run_with_logging(*args, log_verbose: int = 0, log_quiet: bool = False, log_debug: bool = False, **kwargs):
        root = click.get_current_context().find_root()
        if log_verbose or log_quiet:
            _configure_logging(root.params.get("verbose", 0) + log_verbose, root.params.get("quiet") or log_quiet)
        return callback(*args, **kwargs)

    command.callback = run_with_logging
    return command


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(level)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
@click.version_option(package_name="longrope-convert")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Bake searched LongRoPE factors into HF checkpoints, GGUF and ONNX, and prove parity."""
    _configure_logging(verbose, quiet)
    ctx.obj = {"debug": debug}


# Errors of the machine a run can meet while writing (a full disk or quota, a file too large for the
# filesystem, a read-only mount): reported as one line with exit 2, since no code change would fix them.
MACHINE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS")
                           if hasattr(errno, name))


def _machine_error(exc: OSError) -> str:
    """`PATH: no space left on device`, with the path where the OSError names one."""
    reason = (exc.strerror or os.strerror(exc.errno)).lower()
    return f"{display_path(exc.filename)}: {reason}" if exc.filename else reason


def _internal_error(exc: Exception) -> None:
    text = " ".join(str(exc).split())[:300]
    click.echo(f"error: internal error {type(exc).__name__}: {text} (rerun with --debug for a traceback)", err=True)
    sys.exit(EXIT_INTERNAL)


def main(argv: list[str] | None = None) -> None:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        with _cleanup_on_termination():
            code = cli.main(args=argv, prog_name="longrope-convert", standalone_mode=False)
    except Terminated as exc:
        click.echo(f"error: interrupted by {exc.name}; nothing was written at the output path", err=True)
        sys.exit(128 + exc.signum)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("error: interrupted; nothing was written at the output path", err=True)
        sys.exit(130)
    except LongRopeError as exc:
        if debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if debug:
            raise
        if exc.errno in MACHINE_ERRNOS:  # the disk, not the program: exit 2 like any other input problem
            click.echo(f"error: {_machine_error(exc)}; nothing was written at the output path", err=True)
            sys.exit(2)
        _internal_error(exc)
    except Exception as exc:  # a bug, not bad input: still one line unless --debug
        if debug:
            raise
        _internal_error(exc)
    sys.exit(code if isinstance(code, int) else 0)  # ctx.exit(n) in standalone_mode=False returns n
