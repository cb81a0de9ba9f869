"""disarm-tagger: suggest DISARM Red Framework technique ids for influence-operation reports.

The Python API is three calls::

    import disarm_tagger
    tagger = disarm_tagger.load()                 # the bundled models/default (or a folder you name)
    for s in tagger.suggest(text):                # plain text; tagger.suggest_article(raw) takes HTML/markdown
        print(s.rank, s.technique_id, s.name, s.score, s.evidence)
    model = disarm_tagger.train(examples, techniques)   # schema.Example / schema.Technique records
    disarm_tagger.save(model, "models/mine")

Imports are lazy so that ``import disarm_tagger`` stays cheap.
"""

from __future__ import annotations

from .version import __version__

__all__ = ["Tagger", "load", "save", "train", "__version__"]


def load(folder=None, **kwargs):
    """Load and verify a model folder (default: $DISARM_TAGGER_MODEL, else models/default)."""
    from .persist import default_model_dir
    from .persist import load as _load

    return _load(folder or default_model_dir(), **kwargs)


def save(tagger, folder) -> dict:
    """Write a fitted tagger to a model folder; returns its meta.json content."""
    from .persist import save as _save

    return _save(tagger, folder)


def train(examples, techniques, **params):
    """Fit a Tagger on labelled examples over a technique catalogue (see ``Tagger`` for ``params``)."""
    from .tagger import Tagger

    return Tagger(**params).fit(examples, techniques)


def __getattr__(name: str):
    if name == "Tagger":
        from .tagger import Tagger

        return Tagger
    raise AttributeError(f"module 'disarm_tagger' has no attribute {name!r}")
