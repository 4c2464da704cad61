"""How ``hnd ... --help`` is formatted: descriptions keep their line breaks, options show their defaults.

Every subcommand parser passes ``formatter_class=HelpFormatter``. An option whose default means
something (not None, not False) gets ``(default: X)`` appended unless its help already says what the
default is. Descriptions are plain text: no reStructuredText markup (``tests/cli/test_help_texts.py``
checks every subcommand).
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw descriptions, and '(default: X)' after options with a meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default" in text.lower():
            return text
        if not action.option_strings or action.default is None or action.default is False \
                or action.default == argparse.SUPPRESS:  # `is`: a default of 0 is shown, unlike False
            return text
        return f"{text} (default: %(default)s)"
