"""CLI subcommands ``qa``, ``wordfreq`` and ``amplify`` (added to the main app by
:func:`register`)."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parse_window(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        low, high = (int(x) for x in text.split(":"))
    except ValueError as error:
        raise typer.BadParameter(f"Write the layer window as MIN:MAX, got {text!r}.") from error
    return low, high


def _ks(text: str | None) -> list[int] | None:
    return [int(x) for x in _parse_list(text)] if text else None


def _print(result) -> None:
    summary = result.summary()
    columns = ["k", "intervention", "arm"] + [
        c for c in summary.columns if c.endswith("_norm") or c.endswith("_norm_std")
    ]
    typer.echo(f"baseline: {result.baseline}")
    typer.echo(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def register(app: typer.Typer) -> None:
    """Add the ``qa``, ``wordfreq`` and ``amplify`` subcommands to ``app``."""
    from ..cli import handle_errors  # the main CLI's one-line user-error handling

    @app.command()
    @handle_errors
    def qa(
        model: str = typer.Option(
            None, help="Model directory, hub id or GGUF (default: embedded)."
        ),
        percents: str = typer.Option("1,2,3", help="k as % of all heads, comma-separated."),
        ks: str = typer.Option(None, help="Explicit head counts (overrides --percents)."),
        alphas: str = typer.Option("0", help="Interventions: α values and/or 'mean'."),
        method: str = typer.Option("specificity", help="evr, specificity or logit_lens."),
        window: str = typer.Option(None, help="Layer window MIN:MAX for selection."),
        seeds: int = typer.Option(5, help="Matched random control seeds."),
        triviaqa: Path = typer.Option(None, help="TriviaQA-style JSON/JSONL questions."),
        max_questions: int = typer.Option(None, help="At most this many target/non-target."),
        output: Path = typer.Option(Path("results/qa.json"), help="Results JSON."),
    ) -> None:
        """Country QA: target (country answers) vs non-target F1 under head interventions."""
        from ..loading import load_model
        from .qa import run_qa

        loaded = load_model(model) if model else load_model()
        result = run_qa(
            loaded,
            percents=[float(p) for p in _parse_list(percents)],
            ks=_ks(ks),
            interventions=_parse_list(alphas),
            method=method,
            window=_parse_window(window),
            control_seeds=list(range(seeds)),
            triviaqa=triviaqa,
            max_questions=max_questions,
            output=output,
            log=typer.echo,
        )
        _print(result)
        typer.echo(f"wrote {output}")

    @app.command()
    @handle_errors
    def wordfreq(
        concept: str = typer.Argument("colors", help="Built-in concept, 'profanity' or a file."),
        model: str = typer.Option(
            None, help="Model directory, hub id or GGUF (default: embedded)."
        ),
        prompts: Path = typer.Option(None, help="Prompts: RealToxicityPrompts JSONL or text."),
        percents: str = typer.Option("1,2,3", help="k as % of all heads, comma-separated."),
        ks: str = typer.Option(None, help="Explicit head counts (overrides --percents)."),
        alphas: str = typer.Option("0", help="Interventions: α values and/or 'mean'."),
        method: str = typer.Option("specificity", help="evr, specificity or logit_lens."),
        window: str = typer.Option(None, help="Layer window MIN:MAX for selection."),
        seeds: int = typer.Option(5, help="Matched random control seeds."),
        max_new_tokens: int = typer.Option(24, help="Tokens generated per prompt."),
        fluency: bool = typer.Option(False, help="Also report perplexity (fluency proxy)."),
        output: Path = typer.Option(Path("results/wordfreq.json"), help="Results JSON."),
    ) -> None:
        """Held-out concept-word frequency after suppressing the concept's heads."""
        from ..loading import load_model
        from .wordfreq import run_wordfreq

        loaded = load_model(model) if model else load_model()
        result = run_wordfreq(
            loaded,
            concept,
            prompts=prompts,
            percents=[float(p) for p in _parse_list(percents)],
            ks=_ks(ks),
            interventions=_parse_list(alphas),
            method=method,
            window=_parse_window(window),
            control_seeds=list(range(seeds)),
            max_new_tokens=max_new_tokens,
            fluency=fluency,
            output=output,
            log=typer.echo,
        )
        _print(result)
        typer.echo(f"wrote {output}")

    @app.command()
    @handle_errors
    def amplify(
        concept: str = typer.Argument("colors", help="Built-in concept, 'profanity' or a file."),
        model: str = typer.Option(
            None, help="Model directory, hub id or GGUF (default: embedded)."
        ),
        prompts: Path = typer.Option(None, help="Prompts: RealToxicityPrompts JSONL or text."),
        percents: str = typer.Option("1,2,3", help="k as % of all heads, comma-separated."),
        ks: str = typer.Option(None, help="Explicit head counts (overrides --percents)."),
        alphas: str = typer.Option("5", help="Amplification factors α > 1."),
        method: str = typer.Option("specificity", help="evr, specificity or logit_lens."),
        window: str = typer.Option(None, help="Layer window MIN:MAX for selection."),
        seeds: int = typer.Option(5, help="Matched random control seeds."),
        max_new_tokens: int = typer.Option(24, help="Tokens generated per prompt."),
        output: Path = typer.Option(Path("results/amplify.json"), help="Results JSON."),
    ) -> None:
        """Concept-word frequency and perplexity after amplifying the concept's heads."""
        from ..loading import load_model
        from .amplify import run_amplify

        loaded = load_model(model) if model else load_model()
        result = run_amplify(
            loaded,
            concept,
            prompts=prompts,
            percents=[float(p) for p in _parse_list(percents)],
            ks=_ks(ks),
            alphas=_parse_list(alphas),
            method=method,
            window=_parse_window(window),
            control_seeds=list(range(seeds)),
            max_new_tokens=max_new_tokens,
            output=output,
            log=typer.echo,
        )
        _print(result)
        typer.echo(f"wrote {output}")


def main() -> None:
    """Run the task subcommands on their own: ``python -m headpursuit.tasks.cli qa ...``."""
    app = typer.Typer(help="headpursuit language tasks (qa, wordfreq, amplify).")
    register(app)
    app()


if __name__ == "__main__":
    main()
