"""The ``hpcm-deploy`` command line: a thin layer over the Python API, one module per verb."""

from __future__ import annotations

import logging
import sys

import click

from ..errors import HPCMError


class _Group(click.Group):
    """Turns the errors a user can cause into one line on stderr and a non-zero exit: exit status 1 for what the
    command refuses, 2 for a command line click cannot parse (instead of click's usage block)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "hpcm-deploy"
            click.echo(f"error: {exc.format_message()} (see {path} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except HPCMError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpcm-deploy")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Deploy the HPCM learned image codec (HPCM-Base and Phase 2): export, build, run, measure."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s: %(message)s", stream=sys.stderr)


from . import codec, engine, export, info, measure, serve, train  # noqa: E402,F401  (registers the verbs)
