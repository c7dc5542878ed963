"""The `mupriv` command line. Every user-caused error is one line on stderr and exit code 2."""
from __future__ import annotations

import os

import typer

from simulator import __version__
from simulator.cli_compat import keep_argument_help
from simulator.errors import user_errors

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
keep_argument_help()

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mupriv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """mupriv: what on-device µ-Fine-Tuning and federated learning cost in accuracy, bytes and privacy."""


def _mount_subcommands() -> None:
    from simulator.cli_train import finetune_command, train_command

    app.command("train")(user_errors(train_command))
    app.command("finetune")(user_errors(finetune_command))
    from simulator.cli_data import data_app

    from simulator.cli_schemes import run_scheme_command, schemes_command

    app.add_typer(data_app, name="data", help="Inspect real ECG archives and write synthetic cohorts.")
    app.command("schemes")(user_errors(schemes_command))
    app.command("run-scheme")(user_errors(run_scheme_command))
    from simulator.cli_simulate import simulate_command

    app.command("simulate")(user_errors(simulate_command))
    from simulator.cli_attack import attack_command

    app.command("attack")(user_errors(attack_command))
    from simulator.cli_export import export_command

    app.command("export")(user_errors(export_command))
    from simulator.cli_report import compare_command, report_command

    app.command("report")(user_errors(report_command))
    app.command("compare")(user_errors(compare_command))
    from simulator.cli_continual import continual_command

    app.command("continual")(user_errors(continual_command))
    from simulator.cli_config import config_app

    app.add_typer(config_app)  # `mupriv config explain|show|check`


_mount_subcommands()


def main() -> None:
    app()
