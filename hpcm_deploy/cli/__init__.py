"""The ``hpcm-deploy`` command line: a thin layer over the Python API, one module per verb."""

from __future__ import annotations

import logging
import sys

import click

from ..errors import HPCMError


class _Group(click.Group):
    """Turns the errors a user can cause into one line on stderr and a non-zero exit."""

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
