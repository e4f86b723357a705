"""The `headpursuit` command line (placeholder demo until the CLI issue lands)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Find the attention heads that specialise in a concept, and steer them.")


@app.command()
def demo() -> None:
    """Run the pipeline end to end on the embedded default model."""
    from .architectures import AttentionSites
    from .capture import capture
    from .concepts import resolve_concept
    from .loading import load_model
    from .ranking import rank_heads

    loaded = load_model()
    prompts = [
        "What colour is the sky on a clear day?",
        "Name a colour of the rainbow.",
        "Which country has Paris as its capital?",
        "What is the capital of Japan?",
    ]
    acts = capture(loaded, prompts, chat=True)
    sites = AttentionSites(loaded.model)
    for name in ("colors", "countries"):
        concept = resolve_concept(loaded.tokenizer, name)
        ranking = rank_heads(acts, sites, concept.token_ids, concept=name)
        typer.echo(repr(ranking))


@app.command()
def version() -> None:
    """Print the version."""
    from ._version import __version__

    typer.echo(__version__)
