"""The `mupriv` command line."""
import typer

from simulator import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mupriv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    """mupriv: what on-device µ-Fine-Tuning and federated learning cost in accuracy, bytes and privacy."""


def main() -> None:
    app()
