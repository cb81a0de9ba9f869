"""disarm-tagger: suggest DISARM Red Framework technique ids for influence-operation reports."""

__version__ = "0.1.0"
