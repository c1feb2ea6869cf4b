"""The typer application objects that every CLI module registers its verbs on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="rabusseg",
    help="Relation-aware semi-supervised segmentation of breast-ultrasound lesions (RA-BUSSeg).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare, check, split and synthesise datasets.", no_args_is_help=True)
prepare_app = typer.Typer(help="Convert a public dataset download into the rabusseg folder format.", no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")
app.add_typer(data_app, name="data")
